#!/bin/sh
# Every container of the platform starts here, then runs its command.
#
# A backend registers in etcd the URL Traefik should use to reach THIS
# container. With several replicas of one service the compose service name
# resolves to all of them, so each replica registers its own address instead
# (unless STRANGLER_INSTANCE_URL is set explicitly).
set -eu
if [ -n "${STRANGLER_BACKEND:-}" ] && [ -z "${STRANGLER_INSTANCE_URL:-}" ]; then
    address="$(hostname -i | cut -d' ' -f1)"
    STRANGLER_INSTANCE_URL="http://${address}:${PORT:-5000}"
    export STRANGLER_INSTANCE_URL
fi
exec "$@"
