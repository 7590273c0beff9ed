"""Servers for tests over real HTTP: WSGI apps and pages in threads, processes, Socket.IO clients.

Importable as ``servers`` from every test (``tests/conftest.py`` puts this
directory on ``sys.path``; ``tests/contract/flack_contract.py`` does the same
when run as a script). Everything binds to 127.0.0.1 on a free port and is
stopped by the helper that started it.
"""

from __future__ import annotations

import http.server
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import requests

STARTUP_TIMEOUT = 40.0


class QuietHTTPServer(http.server.ThreadingHTTPServer):
    """A threaded HTTP server that keeps quiet when a caller hangs up mid-answer.

    socketserver prints such a caller's traceback to stderr, and a test that
    captures a CLI's output (click's CliRunner swaps ``sys.stderr`` for the
    whole process) would find it there.
    """

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serving(app: Callable) -> Iterator[str]:
    """Serve a WSGI *app* over real HTTP from a thread; yield its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serving_page(body: bytes, path: str, slow_delay: float = 0.0,
                 content_type: str = "text/html; charset=utf-8") -> Iterator[str]:
    """Serve *body* (HTML unless *content_type* says otherwise) at every path from a thread;
    yield the URL of *path*.

    With *slow_delay*, paths containing ``slow`` answer after that many seconds.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if slow_delay and "slow" in self.path:
                time.sleep(slow_delay)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = QuietHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()


def start_server(cmd: list[str], env: dict[str, str], base: str, log: Path, name: str = "server",
                 timeout: float = STARTUP_TIMEOUT) -> subprocess.Popen:
    """Start *cmd* in its own process group and wait until *base*``/healthz`` answers 200.

    Fails the test (with the end of *log*) if it exits or does not answer in *timeout*.
    """
    import pytest

    with log.open("wb") as out:
        # own session: stopping the group also stops gunicorn's workers
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop_server(proc)
    pytest.fail(f"{name} did not answer /healthz in {timeout}s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen, timeout: float = 10.0, group: bool = True) -> int | None:
    """Stop a :func:`start_server` process by its id: TERM, KILL after *timeout*; return its code.

    TERM goes to the whole process group, or with ``group=False`` to the
    process alone (a gunicorn master stopping its workers, as ``strangler
    down`` does); stray workers are killed either way.
    """
    if proc.poll() is None:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stray workers, if any survived
    return proc.returncode


def child_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without a database or queue of its own, keeping data under *data_dir*."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SOCKETIO_MESSAGE_QUEUE")}
    env["STRANGLER_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


class Listener:
    """A real Socket.IO client (websocket transport) queueing every ``updated_model``."""

    def __init__(self, base: str, timeout: float = 10.0) -> None:
        import socketio

        self.timeout = timeout
        self.events: queue.Queue = queue.Queue()
        self.client = socketio.Client(reconnection=False)
        self.client.on("updated_model", self.events.put)
        self.client.connect(base, transports=["websocket"], wait_timeout=10)

    def call(self, event: str, *args: Any) -> Any:
        """Emit *event* with *args* and return the server's ack."""
        return self.client.call(event, args if len(args) != 1 else args[0], timeout=self.timeout)

    def wait_for(self, match: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """The first pushed ``{"class", "model"}`` matching *match*; AssertionError after *timeout*."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if match(event):
                return event
        raise AssertionError(f"no matching updated_model push within {timeout}s")

    def close(self) -> None:
        """Disconnect (a no-op when already disconnected)."""
        if self.client.connected:
            self.client.disconnect()


@contextmanager
def monolith_server(tmp: Path, **env: str) -> Iterator[str]:
    """Run a real ``strangler monolith`` on a free port with its data and SQLite file in *tmp*; yield its URL.

    *env* adds environment variables (e.g. ``LINK_EXPANSION_ALLOW_PRIVATE="true"``).
    """
    from strangler.stack import procs

    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(Path(sys.executable).parent / "strangler"), "monolith", "--host", "127.0.0.1",
           "--port", str(port), "--database", f"sqlite:///{tmp}/m.sqlite"]
    proc = start_server(cmd, child_env(tmp, **env), base, tmp / "server.log")
    try:
        yield base
    finally:
        stop_server(proc)
