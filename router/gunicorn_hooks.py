"""Gunicorn server hooks that join the service registry once per instance.

In a gunicorn config file::

    from router.gunicorn_hooks import when_ready, on_exit  # noqa: F401

The master registers once (``when_ready``), however many workers it forks,
and revokes the lease when it exits (``on_exit``); if the master is killed,
the lease expires after the TTL. Configured from the environment:

- ``STRANGLER_ETCD`` — etcd URL; unset means no registration (the monolith
  running alone);
- ``STRANGLER_BACKEND`` — the backend name (Traefik service), e.g. ``monolith``;
- ``STRANGLER_INSTANCE_URL`` — the URL Traefik should use, e.g.
  ``http://127.0.0.1:5001``; default: gunicorn's first bound address;
- ``STRANGLER_REGISTRY_TTL`` — lease TTL in seconds (default 20: a registration rides
  through an etcd outage or lost quorum shorter than that);
- ``STRANGLER_HEALTH_PATH`` — health check path (default ``/healthz``);
- ``STRANGLER_RELEASE`` — the release label registered beside the instance;
- ``STRANGLER_SERVICE`` — the Traefik service it registers its URL under (default:
  the backend's name; a blue/green's second set: ``<backend>-green``);
- ``STRANGLER_DEREGISTER_WAIT`` — seconds between leaving the registry and
  closing the listeners on SIGTERM (default 1: Traefik's watch needs a moment
  to drop the server; 0 when someone drained the instance first).

On SIGTERM the master leaves the registry *before* gunicorn's graceful stop
closes its listeners, so the load balancer stops sending requests first and
the ones in flight finish.

Every gunicorn config of ours also takes :func:`control_socket_settings`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from router.registry import Registration

log = logging.getLogger(__name__)

_registration: Registration | None = None
_terminated = False  # stopped by SIGTERM through _leave_first: on_exit may end the process at once


class RegistryConfigError(ValueError):
    """A STRANGLER_* registry variable is missing or malformed (message names it)."""


def registration_from_env(
    environ: Mapping[str, str] | None = None, default_url: str | None = None
) -> Registration | None:
    """Build (not start) a Registration from the STRANGLER_* variables; None without STRANGLER_ETCD.

    Raises RegistryConfigError naming the variable to fix.
    """
    from router.etcd import Etcd

    env = os.environ if environ is None else environ
    etcd_url = env.get("STRANGLER_ETCD", "").strip()
    if not etcd_url:
        return None
    backend = env.get("STRANGLER_BACKEND", "").strip()
    if not backend:
        raise RegistryConfigError(
            "STRANGLER_ETCD is set but STRANGLER_BACKEND is not; set the backend name"
        )
    url = env.get("STRANGLER_INSTANCE_URL", "").strip() or default_url
    if not url:
        raise RegistryConfigError(
            "set STRANGLER_INSTANCE_URL to the URL Traefik should use for this instance"
        )
    raw_ttl = env.get("STRANGLER_REGISTRY_TTL", "20")
    try:
        ttl = int(raw_ttl)
    except ValueError:
        raise RegistryConfigError(
            f"STRANGLER_REGISTRY_TTL={raw_ttl!r} is not a whole number of seconds"
        ) from None
    health_path = env.get("STRANGLER_HEALTH_PATH", "/healthz")
    try:
        return Registration(Etcd(etcd_url), backend, url, ttl=ttl, health_path=health_path,
                            release=env.get("STRANGLER_RELEASE", "").strip(),
                            service=env.get("STRANGLER_SERVICE", "").strip())
    except ValueError as exc:
        raise RegistryConfigError(f"bad registry setting: {exc}") from exc


def _bound_url(server: Any) -> str | None:
    """``http://host:port`` of gunicorn's first TCP listener (works with port 0)."""
    for listener in getattr(server, "LISTENERS", []):
        try:
            host, port = listener.getsockname()[:2]
        except (OSError, TypeError, ValueError):
            continue  # a unix socket: Traefik cannot use it
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{port}"
    return None


def when_ready(server: Any) -> None:
    """Gunicorn hook (master, once): register this instance if STRANGLER_ETCD is set."""
    global _registration
    registration = registration_from_env(default_url=_bound_url(server))
    if registration is None:
        return
    # Not required: if etcd is briefly down, serve anyway and register when it answers.
    _registration = registration.start(required=False)
    server.handle_term = _leave_first(server, server.handle_term)
    server.log.info(
        "registered %s as %s at %s",
        registration.instance.backend,
        registration.instance_id,
        registration.instance.url,
    )


def deregister_wait(environ: Mapping[str, str] | None = None) -> float:
    """``STRANGLER_DEREGISTER_WAIT`` in seconds (default 1; malformed or negative: 1)."""
    env = os.environ if environ is None else environ
    try:
        return max(0.0, float(env.get("STRANGLER_DEREGISTER_WAIT", "1")))
    except ValueError:
        return 1.0


def _leave_first(server: Any, graceful_stop: Any) -> Any:
    """Wrap gunicorn's SIGTERM handler: leave the registry, let Traefik notice, then stop."""
    def handle_term() -> None:
        global _terminated
        _terminated = True
        if _registration is not None and _registration.stop():
            server.log.info("left the registry as %s; stopping", _registration.instance_id)
            time.sleep(deregister_wait())
        graceful_stop()

    return handle_term


def on_exit(server: Any) -> None:
    """Gunicorn hook (master, at exit): revoke the registration so Traefik drops it now.

    A master stopped by SIGTERM (exit status 0, its workers gone) then ends
    at once, skipping the interpreter's teardown of everything it imported:
    that teardown is pure CPU (0.3 s on an idle machine, over 1.5 s while a
    whole stack stops together on two cores) and nothing is left to flush.
    """
    global _registration
    if _registration is not None:
        _registration.stop()
        server.log.info("left the registry as %s", _registration.instance_id)
        _registration = None
    if _terminated:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)


def control_socket_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Gunicorn's control-socket settings: off, unless ``STRANGLER_CONTROL_SOCKET`` names a path.

    Gunicorn (25.1 and later) opens a control socket in every master, by
    default at one path per user (``$XDG_RUNTIME_DIR/gunicorn.ctl`` or
    ``~/.gunicorn/gunicorn.ctl``): with several backends on a host they all
    claim it and a ``gunicornc`` command reaches whichever master bound it
    last. Nothing here needs it (the stack drives instances by PID and
    signal), so it stays off; an operator who wants it gives each instance
    its own path.
    """
    env = os.environ if environ is None else environ
    path = env.get("STRANGLER_CONTROL_SOCKET", "").strip()
    if path:
        return {"control_socket": path, "control_socket_disable": False}
    return {"control_socket_disable": True}
