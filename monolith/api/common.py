"""Small helpers the API views share: reading JSON bodies, ids and query filters."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Response, abort, jsonify, request

from monolith import db
from monolith.models import text_problem
from monolith.tokens import MAX_ID

__all__ = ["MAX_ID", "bool_arg", "created", "get_or_404", "int_arg", "json_object"]

Model = TypeVar("Model")


def json_object() -> dict[str, Any]:
    """Return the request body as a JSON object, or abort with 400 saying what is wrong.

    Every view that reads a JSON body (the monolith's and the services')
    comes through here, so a body no view could store is refused once, here:
    not JSON, nested deeper than the parser goes, not an object, or holding
    text no database takes (a lone UTF-16 surrogate, a NUL).
    """
    try:
        data = request.get_json(force=True, silent=True)
    except RecursionError:  # the parser's own depth limit: not a crash, a bad body
        abort(400, description="the request body must be valid JSON, not nested this deep")
    if data is None:
        abort(400, description="the request body must be valid JSON")
    if not isinstance(data, dict):
        abort(400, description="the request body must be a JSON object")
    if problem := text_problem(data):
        abort(400, description=f"the request body {problem}")
    return data


def get_or_404(model: type[Model], id: int, session: Any = None) -> Model:
    """Return the row of *model* with primary key *id*, or abort with 404.

    *session* defaults to the monolith's; a service passes its own.
    """
    session = db.session if session is None else session
    row = session.get(model, id) if 0 < id <= MAX_ID else None
    if row is None:
        abort(404, description=f"{model.__name__.lower()} {id} not found")
    return row


def int_arg(name: str) -> int | None:
    """Return the integer query argument *name*, None if absent; 400 if not an integer."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        abort(400, description=f"{name} must be an integer, not {raw!r}")
    if not -(2**63) <= value < 2**63:
        abort(400, description=f"{name} is out of range")
    return value


def bool_arg(name: str) -> bool | None:
    """Return the ``0``/``1`` query argument *name* as a bool, None if absent; 400 otherwise."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if raw not in ("0", "1"):
        abort(400, description=f"{name} must be 0 or 1, not {raw!r}")
    return raw == "1"


def created(body: dict[str, Any], location: str) -> Response:
    """Return the 201 answer to a POST: *body* as JSON, with ``Location: location``."""
    response = jsonify(body)
    response.status_code = 201
    response.headers["Location"] = location
    return response
