"""The monolith's WSGI app plus one bench-only view: the floor of ``GET /api/messages``.

``GET /bench/floor/messages`` answers with the bytes ``GET /api/messages``
gave the first time this worker was asked (same status, headers and body,
computed once per worker by calling the real view in that first request),
so the difference between the two is the API's own work: the token check,
the database query, building and serialising the messages. Everything else
(gunicorn, Flask's routing, the client) is the same. bench/monolith_api.py
starts it as ``monolith_floor:app`` with ``--pythonpath bench``; it is never
part of the product.
"""

from __future__ import annotations

import threading

from flask import Response, current_app

from monolith.wsgi import app

_lock = threading.Lock()
_cached: dict[str, Response] = {}


@app.get("/bench/floor/messages")
def floor_messages() -> Response:
    """The bench's floor: ``GET /api/messages``'s first answer in this worker, as stored bytes."""
    with _lock:
        if "messages" not in _cached:
            real = current_app.make_response(current_app.view_functions["api.get_messages"]())
            _cached["messages"] = real
        real = _cached["messages"]
    return Response(real.get_data(), status=real.status_code, headers=dict(real.headers))
