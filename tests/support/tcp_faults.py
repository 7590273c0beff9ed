"""A TCP hop in front of a real server that loses one side of each HTTP exchange.

For tests of what a client does when a connection breaks mid-request, the
one fault a live process cannot be made to show on cue:

- ``drop="request"``: reads the request, never forwards it, closes the
  connection (the server never saw it; the client cannot know that);
- ``drop="response"``: forwards the request, waits for the server's answer
  to begin (so the server has acted on it), then closes the connection
  without passing the answer on.

Everything listens on 127.0.0.1; ``stop()`` closes the listener and joins its thread.
"""

from __future__ import annotations

import socket
import threading


def _read_request(conn: socket.socket) -> bytes | None:
    """One HTTP request with a Content-Length body, or None when the client hung up."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


class LossyHop:
    """Listens on a free loopback port and forwards to ``upstream`` (``host:port``), losing ``drop``."""

    def __init__(self, upstream: str, drop: str) -> None:
        if drop not in ("request", "response"):
            raise ValueError(f"drop={drop!r}: use 'request' or 'response'")
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.drop = drop
        self.exchanges = 0  # requests this hop has broken
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # stop() closed the listener
                return
            with conn:
                request = _read_request(conn)
                if request is None:
                    continue
                if self.drop == "response":
                    with socket.create_connection(self.upstream, timeout=10) as up:
                        up.sendall(request)
                        up.recv(1)  # the answer begins: the server has done the work
                self.exchanges += 1

    def stop(self) -> None:
        """Stop listening (shutdown wakes the blocked accept) and wait for the thread."""
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(timeout=5)


class Switch:
    """A plain TCP forwarder to ``upstream`` (``host:port``) that can be cut and restored.

    ``cut()`` closes every forwarded connection and, until ``restore()``,
    closes each new one at once: to its clients the server is gone (a
    database that stopped answering), though its port stays the same.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        self._cut.clear()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # stop() closed the listener
                return
            if self._cut.is_set():
                _close(conn)
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _close(conn)
                continue
            with self._lock:
                self._open.update((conn, up))
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(target)
            _close(source)
            _close(target)

    def stop(self) -> None:
        """Stop listening and close every forwarded connection."""
        _close(self._listener)
        self._thread.join(timeout=5)
        self.cut()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
