"""The console: one web page to watch and steer a migration (``strangler console``).

``create_app()`` builds it from the environment (``STRANGLER_RUN_DIR``,
``STRANGLER_PLAN``, ``STRANGLER_ETCD``, ``STRANGLER_TRAEFIK_API``,
``STRANGLER_CONSOLE_HOST``, ``STRANGLER_CONSOLE_PASSWORD``); a test passes
``test_config`` with the same keys. It reads etcd, Traefik's API and
metrics, the comparator's results and the stack's state (see
:mod:`.snapshot`), never a backend's database. Its actions call the CLI's
code (:mod:`.actions`).

Who may use it: anyone who can reach it, which by default is this machine
only (127.0.0.1). Binding elsewhere needs ``STRANGLER_CONSOLE_PASSWORD``
(HTTP basic auth on every view but ``/healthz``). A web page in the
browser must not be able to act through it: every POST needs the session's
CSRF token in ``X-CSRF-Token`` and, when the browser sends an ``Origin``,
the console's own; a request for another ``Host`` than the bound loopback
name is refused too (DNS rebinding). Documented in docs/console.md.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, render_template, request, session
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from strangler.console import actions, events
from strangler.console.metrics import registry_for, relayed_urls
from strangler.console.snapshot import Snapshots, Sources

log = logging.getLogger(__name__)
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
MAX_BODY = 64 * 1024  # an action's JSON is a few hundred bytes
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class ConsoleConfigError(ValueError):
    """The console cannot start as configured (one line saying what to set)."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, password: str | None) -> None:
    """Refuse binding ``host`` beyond loopback without a password (ConsoleConfigError)."""
    if not is_loopback(host) and not password:
        raise ConsoleConfigError(
            f"the console would listen on {host} without a password: set STRANGLER_CONSOLE_PASSWORD, "
            "or bind it to 127.0.0.1")


def config_from(env: Mapping[str, str]) -> dict[str, Any]:
    """The console's settings from ``env`` (os.environ's names)."""
    return {
        "RUN_DIR": env.get("STRANGLER_RUN_DIR") or ".strangler",
        "PLAN": env.get("STRANGLER_PLAN") or None,
        "ETCD": env.get("STRANGLER_ETCD") or None,
        "TRAEFIK_API": env.get("STRANGLER_TRAEFIK_API") or None,
        "HOST": env.get("STRANGLER_CONSOLE_HOST") or "127.0.0.1",
        "PASSWORD": env.get("STRANGLER_CONSOLE_PASSWORD") or None,
        "MAX_STREAMS": streams_from(env),
        "SEND_TIMEOUT": send_timeout_from(env),
    }


def send_timeout_from(env: Mapping[str, str]) -> float:
    """Seconds one write to a live stream may wait for a client that stopped reading before the
    stream ends (STRANGLER_CONSOLE_SEND_TIMEOUT, default 10; malformed or not above 0: 10)."""
    try:
        seconds = float(env.get("STRANGLER_CONSOLE_SEND_TIMEOUT") or events.SEND_TIMEOUT)
    except ValueError:
        return events.SEND_TIMEOUT
    return seconds if 0 < seconds < float("inf") else events.SEND_TIMEOUT


def streams_from(env: Mapping[str, str]) -> int:
    """Live streams open at once: each holds one of gunicorn's threads (STRANGLER_THREADS, default 4),
    and two stay free for the buttons and /metrics (none below 3 threads: every page then polls)."""
    raw = env.get("STRANGLER_THREADS") or "4"
    return max(0, int(raw) - 2) if raw.isascii() and raw.isdigit() else 2


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """The console's WSGI app (settings from the environment unless ``test_config`` gives them)."""
    app = Flask(__name__)
    app.config.from_mapping(config_from(os.environ))
    app.config.from_mapping(test_config or {})
    check_binding(app.config["HOST"], app.config["PASSWORD"])
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # one process: sessions last as long as it does
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="strangler_console",
        MAX_CONTENT_LENGTH=MAX_BODY,
    )
    sources = Sources(Path(app.config["RUN_DIR"]),
                      Path(app.config["PLAN"]) if app.config["PLAN"] else None,
                      app.config["ETCD"], app.config["TRAEFIK_API"])
    snapshots = Snapshots(sources)
    registry, counted = registry_for(snapshots.get, lambda: relayed_urls(sources.state()))
    app.extensions["console"] = snapshots

    @app.before_request
    def guard() -> Response | None:
        """Password (when set), Host (loopback), and for a POST: same Origin and the CSRF token."""
        if request.path == "/healthz":
            return None
        password = app.config["PASSWORD"]
        if password:
            given = request.authorization.password if request.authorization else ""
            if not hmac.compare_digest((given or "").encode(), password.encode()):
                answer = _refuse("the console needs its password (STRANGLER_CONSOLE_PASSWORD)", 401)
                answer.headers["WWW-Authenticate"] = 'Basic realm="strangler console"'
                return answer
        elif not is_loopback(urlsplit(f"//{request.host}").hostname or ""):
            return _refuse(f"this console answers only for 127.0.0.1, not {request.host}")
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin != request.host_url.rstrip("/"):
                return _refuse(f"cross-site request from {origin} refused")
            token = session.get("csrf", "")
            given = request.headers.get("X-CSRF-Token", "")
            if not token or not hmac.compare_digest(given.encode(), token.encode()):
                return _refuse("missing or wrong CSRF token: reload the console page")
        return None

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """Unknown paths, wrong methods, bodies over MAX_BODY...: one line of JSON, not an HTML page."""
        what = {404: f"no such page: {request.method} {request.path[:100]}",
                405: f"{request.method} is not allowed on {request.path[:100]}",
                413: f"the request body is over {MAX_BODY} bytes"}.get(exc.code or 500, exc.name)
        answer = _refuse(what, exc.code or 500)
        if exc.code == 405 and exc.valid_methods:
            answer.headers["Allow"] = ", ".join(exc.valid_methods)
        return answer

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        """A bug: logged with its traceback on the console's side; the page gets one line."""
        log.exception("console: %s %s failed", request.method, request.path)
        return _refuse(f"the console failed on this request ({type(exc).__name__}); see its log", 500)

    @app.after_request
    def headers(response: Response) -> Response:
        """Tight headers on every answer, and count it for /metrics."""
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        counted.labels(request.endpoint or "none", str(response.status_code)).inc()
        return response

    @app.get("/")
    def page() -> str:
        """The console page (anyone allowed in, see guard); its CSRF token rides in a meta tag."""
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return render_template("console.html", csrf=session["csrf"])

    @app.get("/api/state")
    def state() -> Response:
        """Everything the page shows, as JSON (the page's first view, and its polling fallback)."""
        return jsonify(snapshots.get())

    events.init_app(app, snapshots.get, app.config["MAX_STREAMS"], app.config["SEND_TIMEOUT"])  # GET /api/events: events.py

    @app.post("/api/flip")
    def flip() -> Response:
        """Flip endpoints or a service's endpoints to a backend, as ``strangler flip`` (CSRF-checked)."""
        return _act(actions.flip)

    @app.post("/api/rollback")
    def rollback() -> Response:
        """Roll back one change by id, as ``strangler rollback ID`` (CSRF-checked)."""
        return _act(actions.rollback)

    @app.post("/api/promote")
    def promote() -> Response:
        """Start a promotion with the default analysis, as ``strangler promote --detach`` (CSRF-checked)."""
        return _act(actions.promote)

    @app.post("/api/promotions/abort")
    def abort_promotion() -> Response:
        """Abort the promotion running on endpoints, as ``strangler promote --abort`` (CSRF-checked)."""
        return _act(actions.abort_promotion)

    def _act(action: Any) -> Response:
        try:
            body = request.get_json(silent=True)
        except RecursionError:  # nested thousands deep: not an action's body
            body = None
        if not isinstance(body, dict):
            return jsonify(ok=False, error="send a JSON object"), 400
        try:
            result = action(sources, body)
        except actions.Refused as exc:
            return jsonify(ok=False, error=str(exc)), 409
        finally:
            snapshots.invalidate()
        return jsonify(result)

    @app.get("/metrics")
    def metrics() -> Response:
        """The migration as Prometheus series (docs/console.md lists the names)."""
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        """No icon (anyone): an empty answer instead of a 404 in the browser's console."""
        return Response(status=204)

    @app.get("/healthz")
    def healthz() -> Response:
        """Health check (anyone): 200 while the console runs."""
        return jsonify(status="ok")

    return app


def _refuse(message: str, status: int = 403) -> Response:
    """``{"ok": false, "error": message}`` on one line."""
    return Response(json.dumps({"ok": False, "error": " ".join(message.split())}), status,
                    mimetype="application/json")
