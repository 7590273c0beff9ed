"""``GET /api/events``: the page's live updates as server-sent events, polling kept as the fallback.

Each event is the whole snapshot (``/api/state``'s JSON), sent when it
changed (looked at every ``CHECK`` seconds) or, unchanged, every
``HEARTBEAT`` seconds so the page can show it is live. A stream ends after
``LIFETIME`` seconds; the browser's EventSource reconnects by itself
(``retry``), so a long-open page never pins one connection for ever; a
client that stops reading loses its stream once a write has waited
``SEND_TIMEOUT`` seconds.

Each open stream holds one of the console's threads (gunicorn gthread), so
at most ``max_streams`` run at once, leaving threads for the buttons and
``/metrics``: one more is answered 503 and that page polls ``/api/state``
every second instead, as it did before streams existed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, jsonify, request

CHECK = 0.5  # seconds between two looks at the snapshot (its routing part is rebuilt as often)
HEARTBEAT = 2.0  # seconds: an unchanged snapshot is sent again this often (a closed page is noticed at the next write)
LIFETIME = 120.0  # seconds a stream lasts before the browser reconnects
RETRY_MS = 500
SEND_TIMEOUT = 10.0  # seconds one write may wait for a client that stopped reading before the stream ends


def changes(snapshot: Callable[[], dict[str, Any]], *, check: float = CHECK, heartbeat: float = HEARTBEAT,
            lifetime: float = LIFETIME, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> Iterator[str]:
    """The event stream's text: a ``retry`` line, then the snapshot when it changed (its ``time`` aside)
    or every ``heartbeat`` seconds, until ``lifetime`` seconds have passed."""
    yield f"retry: {RETRY_MS}\n\n"
    began = clock()
    sent, sent_at = None, float("-inf")
    while clock() - began < lifetime:
        snap = snapshot()
        seen = json.dumps({k: v for k, v in snap.items() if k != "time"}, sort_keys=True, default=str)
        if seen != sent or clock() - sent_at >= heartbeat:
            yield f"data: {json.dumps(snap, default=str)}\n\n"
            sent, sent_at = seen, clock()
        sleep(check)


def init_app(app: Flask, snapshot: Callable[[], dict[str, Any]], max_streams: int,
             send_timeout: float = SEND_TIMEOUT) -> None:
    """Add ``GET /api/events`` (at most ``max_streams`` open at once) to the console's app; one write
    waits at most ``send_timeout`` seconds for a client that stopped reading."""
    slots = threading.BoundedSemaphore(max_streams) if max_streams > 0 else None

    def events() -> Response | tuple[Response, int]:
        """The page's live updates (anyone allowed in, see the console's guard); 503 when all streams
        are taken (or none may be open: too few threads): the page then polls /api/state."""
        gate = slots
        if gate is None or not gate.acquire(blocking=False):
            return jsonify(ok=False, error="every live stream is taken: this page polls instead"), 503

        # A client that keeps the connection but stops reading would block a write for ever once the
        # socket's buffers are full (gunicorn's sockets have no timeout): the thread and the slot with
        # it, past the stream's lifetime. Bounded, that write fails and the server closes the stream.
        sock = request.environ.get("gunicorn.socket")
        if sock is not None:
            sock.settimeout(send_timeout)
        released = threading.Event()

        def release() -> None:  # the server closes the response however the stream ended, once
            if not released.is_set():
                released.set()
                gate.release()

        answer = Response(changes(snapshot), mimetype="text/event-stream")
        answer.call_on_close(release)
        return answer

    app.add_url_rule("/api/events", "events", events, methods=["GET"])
