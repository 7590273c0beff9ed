"""The comparator's report over HTTP, ``GET /_shadow/diffs``: what ``strangler diffs`` prints.

So the report reaches a command run outside the comparator's container
(docker-compose) or machine, which cannot open its ``shadow.sqlite``. The
answer is the stored report plus the counts not flushed yet
(:func:`strangler.shadow.store.live_report`), as JSON::

    {"endpoints": [{"endpoint": "GET /api/users/<id>", "seen": 30, ..., "examples": [...]}],
     "store": "/data/shadow.sqlite"}

Read-only and bounded: ``endpoint`` (one endpoint's entry, at most 500
characters), ``examples`` (0-50 per endpoint, default 2) and ``top``
(0-50 differing fields per endpoint, default 10); any other parameter or a
value out of range is a 400 naming it. It carries stored request/answer
examples (credentials redacted), so like the mirrored copies it takes only
requests marked with the mirror secret (the app's ``only_traefik`` guard):
whoever can read etcd can read it, as they could the routes.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request

from strangler.shadow.store import live_report

PATH = "/_shadow/diffs"
MAX_ENDPOINT = 500
# parameter -> (default, highest); both at least 0
NUMBERS = {"examples": (2, 50), "top": (10, 50)}


class BadQuery(ValueError):
    """A query parameter the view does not take, or a value out of its range."""


def parse_query(args: Any) -> tuple[str | None, int, int]:
    """PURE: ``(endpoint, examples, top)`` from the query's arguments; BadQuery naming the bad one."""
    unknown = sorted(set(args) - {"endpoint", *NUMBERS})
    if unknown:
        raise BadQuery(f"unknown parameter {unknown[0]!r}: this view takes endpoint, examples and top")
    endpoint = args.get("endpoint") or None
    if endpoint is not None and len(endpoint) > MAX_ENDPOINT:
        raise BadQuery(f"endpoint is longer than {MAX_ENDPOINT} characters")
    numbers = []
    for name, (default, highest) in NUMBERS.items():
        raw = args.get(name, str(default))
        if not (raw.isascii() and raw.isdigit()) or int(raw) > highest:  # '²' is a digit to isdigit, not to int
            raise BadQuery(f"{name}={raw!r} must be a whole number from 0 to {highest}")
        numbers.append(int(raw))
    return endpoint, numbers[0], numbers[1]


def init_app(app: Flask) -> None:
    """Add ``GET /_shadow/diffs`` to the comparator's app (its comparator in ``app.extensions``)."""

    def diffs() -> Response | tuple[Response, int]:
        """The comparator's report, per endpoint (only requests carrying the mirror secret)."""
        try:
            endpoint, examples, top = parse_query(request.args)
        except BadQuery as exc:
            return jsonify(error=str(exc)), 400
        store = app.extensions["comparator"].store
        return jsonify(endpoints=live_report(store, endpoint, top=top, examples=examples),
                       store=str(store.path))

    app.add_url_rule(PATH, "diffs", diffs, methods=["GET"])
