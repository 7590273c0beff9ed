"""Rate limits per client on the endpoints that cost a password hash: log in and register.

``POST /api/tokens`` and ``POST /api/users`` each run scrypt, slow on
purpose; without a limit one client can brute-force passwords or keep every
worker hashing. Each is limited per client address (``RATE_LIMIT_LOGIN``,
``RATE_LIMIT_REGISTER``) with Flask-Limiter. The monolith and the services
that serve these endpoints (tokens, users) install the same limits, counted
under the endpoint's name (``POST /api/tokens``), so with a shared storage
(Redis on the platform: ``RATE_LIMIT_STORAGE_URL``, by default the Socket.IO
queue's) one client has one budget whichever backend or instance answers.

The client is the peer address, or — when the peer is a trusted proxy
(``TRUSTED_PROXIES``, Traefik) — the address that proxy appended to
``X-Forwarded-For``: the entries a client wrote itself are never believed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from ipaddress import ip_address

from flask import Flask, current_app, jsonify, request
from flask_limiter import Limiter, RateLimitExceeded
from limits.errors import ConfigurationError

from monolith.config import ConfigError

# endpoint (method + path template, as the plan names it) -> the setting holding its limit
LIMITED = {
    ("POST", "/api/tokens"): "RATE_LIMIT_LOGIN",
    ("POST", "/api/users"): "RATE_LIMIT_REGISTER",
}
KEY_PREFIX = "flack-rate"


def client_address(peer: str | None, forwarded_for: str | None, trusted: Iterable) -> str:
    """PURE: the address a request counts against.

    Walks ``X-Forwarded-For`` from the right while the hop that added an entry
    is a trusted proxy, so a client cannot choose its own identity by sending
    the header: only what our proxies appended is read.
    """
    networks = tuple(trusted)
    client = peer or "unknown"
    hops = [part.strip() for part in (forwarded_for or "").split(",") if part.strip()]
    while hops and _trusted(client, networks):
        client = hops.pop()
    return client


def _trusted(address: str, networks: tuple) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False  # not an address (a forged "unknown", a name): never a proxy of ours
    return any(ip in network for network in networks)


def request_client() -> str:
    """The current request's client address (see :func:`client_address`)."""
    return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                          current_app.config["TRUSTED_PROXIES"])


def init_rate_limits(app: Flask) -> Limiter:
    """Limit the app's views of the :data:`LIMITED` endpoints; return the app's limiter.

    Call after the blueprints are registered. One limiter per app (not one
    unbound at module level): a limiter keeps its storage, and two apps in one
    process (tests, the monolith beside a service) must not share a memory
    count unless their settings say so. Raises ConfigError for a storage URL
    Flask-Limiter cannot use.
    """
    limiter = Limiter(
        key_func=request_client,
        storage_uri=app.config["RATE_LIMIT_STORAGE_URL"],
        strategy="moving-window",
        key_prefix=KEY_PREFIX,
        # Redis down: each instance counts on its own rather than failing logins
        in_memory_fallback_enabled=True,
    )
    try:
        limiter.init_app(app)
    except ConfigurationError as exc:
        raise ConfigError(f"RATE_LIMIT_STORAGE_URL cannot be used: {exc}") from None
    for (method, path), setting in LIMITED.items():
        for endpoint in _endpoints(app, method, path):
            app.view_functions[endpoint] = limiter.shared_limit(
                _setting(setting), scope=f"{method} {path}", methods=[method],
            )(app.view_functions[endpoint])
    app.register_error_handler(RateLimitExceeded, too_many_requests)
    app.extensions["rate_limiter"] = limiter
    return limiter


def _endpoints(app: Flask, method: str, path: str) -> list[str]:
    rules = app.url_map.iter_rules()
    return [rule.endpoint for rule in rules if rule.rule == path and method in (rule.methods or ())]


def _setting(name: str):  # noqa: ANN202 (Flask-Limiter takes a callable returning the limit)
    # read at request time, so a test (or an operator's reload) changing app.config takes effect
    return lambda: current_app.config[name]


def too_many_requests(error: RateLimitExceeded):  # noqa: ANN201 (a Flask response)
    """429 ``{"error": ...}`` with ``Retry-After`` (seconds until the client may try again)."""
    limiter: Limiter = current_app.extensions["rate_limiter"]
    breached = limiter.current_limit
    wait = max(1, math.ceil(breached.reset_at - time.time())) if breached else 60
    response = jsonify({"error": f"too many requests: at most {error.description} from one client; "
                                 f"try again in {wait} s"})
    response.status_code = 429
    response.headers["Retry-After"] = str(wait)
    return response
