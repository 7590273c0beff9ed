"""Keep hostile Engine.IO traffic from holding request threads or ending in a 500.

python-engineio (4.x, up to 4.15.1 at least) closes a polling socket with
``Socket.close(wait=True)``: it queues a CLOSE packet and then calls
``queue.join()``, waiting until a long-poll GET has taken every queued
packet. ``Server.handle_request`` closes that way whenever a POST carries a
packet it refuses (an unknown type such as ``9``, a client ``PING``, a body
over ``max_http_buffer_size``, ...), from the thread serving that POST. A
client that never polls again therefore holds the thread for ever: three
anonymous requests per thread (handshake, ``40``, ``9``) and the whole
gunicorn worker stops answering. No release of the library fixes it yet.

The fix here is aimed at that wait and nothing else: each socket's queue
gets a ``join`` that gives up after :data:`CLOSE_WAIT` seconds. Waiting at
all is only a courtesy, so a polling client can still fetch the CLOSE
packet; a client that does not poll within the bound learns of the close
from its next poll (``400 Invalid session``), as it would from any lost
connection. Nothing else about the queue changes (``get``/``put``/
``task_done`` are the standard library's).

A second, smaller library bug: a POST to a session closed a moment earlier
(a client ``1`` CLOSE packet, then any other POST) raises ``KeyError`` out
of ``handle_request`` (its GET branch catches it, its POST branch does
not), which gunicorn answers with a 500. :class:`ClosedSessionAnswers`
turns it into the library's own ``400 Invalid session``.

:func:`guard` applies both to an app. See docs/security.md for the
upstream report.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

# A client with a long-poll outstanding (every well-behaved one) takes the CLOSE
# packet within a round trip; a second is ample on any network we serve and
# short enough that a flood of refused packets frees each thread quickly.
CLOSE_WAIT = 1.0


class BoundedJoinQueue(queue.Queue):
    """A ``queue.Queue`` whose ``join()`` returns after *join_timeout* seconds at most."""

    def __init__(self, maxsize: int = 0, join_timeout: float = CLOSE_WAIT) -> None:
        super().__init__(maxsize)
        self.join_timeout = join_timeout

    def join(self) -> None:
        """Wait until every item is done, or *join_timeout* seconds have passed."""
        deadline = time.monotonic() + self.join_timeout
        with self.all_tasks_done:
            while self.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.all_tasks_done.wait(left)


def bound_socket_close(socketio: Any, close_wait: float = CLOSE_WAIT) -> None:
    """Make every socket of *socketio*'s server (a bound Flask-SocketIO) close within *close_wait* s.

    Call it right after ``socketio.init_app(app, async_mode="threading")``:
    each ``init_app`` builds a new server. Only the threading mode is
    covered (its queue is ``queue.Queue``); another mode raises ``ValueError``
    rather than run unguarded.
    """
    eio = socketio.server.eio
    if eio.async_mode != "threading":
        raise ValueError(f"the close guard covers async_mode='threading' only, not {eio.async_mode!r}")

    def create_queue(*args: Any, **kwargs: Any) -> BoundedJoinQueue:
        return BoundedJoinQueue(*args, join_timeout=close_wait, **kwargs)

    # on this server instance only: the library's class and other servers are untouched
    eio.create_queue = create_queue


class ClosedSessionAnswers:
    """WSGI middleware: a ``KeyError`` out of Engine.IO under ``/socket.io/`` becomes a 400.

    Engine.IO raises it (before starting the response) only for a session it
    has just closed; other paths and other errors pass through untouched.
    """

    def __init__(self, app: Callable, path: str = "/socket.io/") -> None:
        self.app = app
        self.path = path

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith(self.path):
            return self.app(environ, start_response)
        try:
            return self.app(environ, start_response)
        except KeyError as exc:
            logger.info("Socket.IO request for a closed session refused: %s", exc)
            start_response("400 BAD REQUEST", [("Content-Type", "text/plain")])
            return [b'"Invalid session"']


def guard(app: Any, socketio: Any) -> None:
    """Guard the Socket.IO endpoint of *app* (a Flask app *socketio* was just bound to).

    Call it right after ``socketio.init_app(app, async_mode="threading")``.
    """
    bound_socket_close(socketio)
    app.wsgi_app = ClosedSessionAnswers(app.wsgi_app)
