#!/bin/sh
# Turn on etcd authentication for the platform, once (docker-compose.yml's
# one-shot `etcd-init` service runs it; so can an operator, against any etcd).
#
#   root       etcd's administrator (user `root` with role `root`); nothing of
#              ours logs in as root after this script
#   strangler  the toolkit and every backend (routes, history, registry,
#              revocations, data links): read and write `strangler/` and `traefik`*
#   traefik    Traefik's etcd provider: read `traefik`* only
#
# Passwords come from the environment (ETCD_ROOT_PASSWORD, ETCD_STRANGLER_PASSWORD,
# ETCD_TRAEFIK_PASSWORD; see .env.example) and reach etcdctl on stdin or in
# ETCDCTL_USER, never on a command line. Safe to run again: once auth is on it
# only says so. ETCDCTL_ENDPOINTS says which etcd (default 127.0.0.1:2379).
set -eu
: "${ETCD_ROOT_PASSWORD:?set ETCD_ROOT_PASSWORD}"
: "${ETCD_STRANGLER_PASSWORD:?set ETCD_STRANGLER_PASSWORD}"
: "${ETCD_TRAEFIK_PASSWORD:?set ETCD_TRAEFIK_PASSWORD}"
export ETCDCTL_API=3

if ETCDCTL_USER="root:${ETCD_ROOT_PASSWORD}" etcdctl auth status 2>/dev/null | grep -q "Status: true"; then
    echo "etcd authentication is already on"
    exit 0
fi

add_user() {  # name password role: the user with that one role (made if missing)
    if ! etcdctl user get "$1" >/dev/null 2>&1; then
        printf '%s\n' "$2" | etcdctl user add "$1" --interactive=false >/dev/null
    fi
    etcdctl role get "$3" >/dev/null 2>&1 || etcdctl role add "$3" >/dev/null
    etcdctl user grant-role "$1" "$3" >/dev/null
}

add_user root "$ETCD_ROOT_PASSWORD" root
add_user strangler "$ETCD_STRANGLER_PASSWORD" strangler
add_user traefik "$ETCD_TRAEFIK_PASSWORD" traefik
# "traefik" as a prefix covers the root key itself and everything below it
etcdctl role grant-permission strangler --prefix=true readwrite strangler/ >/dev/null
etcdctl role grant-permission strangler --prefix=true readwrite traefik >/dev/null
etcdctl role grant-permission traefik --prefix=true read traefik >/dev/null
etcdctl auth enable
