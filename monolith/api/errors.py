"""JSON errors for API clients: no path ever answers them with HTML or a traceback."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

# what a database that stopped answering (or a pool left waiting) raises
DATABASE_DOWN = (OperationalError, DisconnectionError, PoolTimeout)

logger = logging.getLogger(__name__)


def wants_json() -> bool:
    """Tell whether the client is an API client (an API path, or JSON preferred over HTML)."""
    if request.path.startswith("/api/") or request.path in ("/api", "/healthz"):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json"


DISCARD_MAX = 16 * 1024 * 1024  # bytes of a refused body read and dropped before the 413 goes out


def _discard_body() -> None:
    """Read and drop a refused body (up to DISCARD_MAX) before answering 413.

    Answered while the body is still coming, the server closes a connection with
    unread data in it: the kernel resets it, and a proxy still sending the body
    (Traefik) then answers its client 502 instead of our 413. A body over
    DISCARD_MAX is not read: that connection is closed as before.
    """
    length = request.content_length
    stream = request.environ.get("wsgi.input")
    if stream is None or length is None or length > DISCARD_MAX:
        return
    left = length
    try:
        while left > 0:
            chunk = stream.read(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)
    except (OSError, ValueError):
        return  # the client went away: nothing to answer anyway


def register_error_handlers(app: Flask) -> None:
    """Answer every HTTP error (and any crash) with ``{"error": ...}`` for API clients."""

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):  # noqa: ANN202
        if error.code == 413:
            _discard_body()
        if not wants_json():
            return error
        response = jsonify({"error": error.description or error.name})
        response.status_code = error.code or 500
        for name, value in error.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response

    def database_unavailable(error: Exception):  # noqa: ANN202
        # the pool drops connections the server closed; the next request connects afresh
        logger.warning("database unavailable on %s %s: %s", request.method, request.path,
                       str(error).splitlines()[0][:200])
        down = ServiceUnavailable("the database is not answering; retry in a moment")
        down.retry_after = 1
        return http_error(down)

    for kind in DATABASE_DOWN:
        app.register_error_handler(kind, database_unavailable)

    @app.errorhandler(InternalServerError)
    def server_error(error: InternalServerError):  # noqa: ANN202
        if error.original_exception is not None:
            logger.error("unhandled error on %s %s", request.method, request.path,
                         exc_info=error.original_exception)
        if not wants_json():
            return error
        return jsonify({"error": "internal server error"}), 500
