"""Hostile Socket.IO traffic against the real monolith under gunicorn (monolith/socketio_guard.py).

python-engineio 4.15.1 holds the request thread for ever when a polling
client that never polls again sends a refused packet (``9``, a client
``PING``, a body over 1 MB, ...). The server here runs with 16 threads, so
that 16 connected websockets (each holding one) prove no thread is left busy.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sio_attack
from servers import child_env, start_server, stop_server

from monolith.socketio_guard import BoundedJoinQueue, bound_socket_close
from strangler.stack import procs

BIN = Path(sys.executable).parent
THREADS = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The monolith's production gunicorn command with one worker of THREADS threads."""
    tmp = tmp_path_factory.mktemp("guarded")
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    env = child_env(tmp, DATABASE_URL=f"sqlite:///{tmp}/g.sqlite", MONOLITH_THREADS=str(THREADS),
                    SECRET_KEY=uuid.uuid4().hex, JWT_SECRET_KEY=uuid.uuid4().hex)
    cmd = [str(BIN / "gunicorn"), "-c", "python:monolith.gunicorn_conf", "monolith.wsgi:app",
           "--bind", f"127.0.0.1:{port}"]
    proc = start_server(cmd, env, base, tmp / "gunicorn.log")
    try:
        yield base
    finally:
        stop_server(proc)


def token_for(base: str) -> str:
    nickname, password = "u" + uuid.uuid4().hex[:12], "s3cret"
    created = requests.post(f"{base}/api/users", json={"nickname": nickname, "password": password},
                            timeout=10)
    assert created.status_code == 201, created.text
    return requests.post(f"{base}/api/tokens", auth=(nickname, password), timeout=10).json()["token"]


@pytest.mark.integration
def test_hostile_sequences_hold_no_thread(server: str) -> None:
    figures = sio_attack.check_survives(server, THREADS, token_for(server))
    print(f"monolith after 200 hostile sequences: {figures}")


def test_join_gives_up_after_its_timeout_but_not_before_the_work_is_done() -> None:
    waiting = BoundedJoinQueue(join_timeout=0.2)
    waiting.put("close packet nobody polls")
    start = time.monotonic()
    waiting.join()
    assert 0.2 <= time.monotonic() - start < 1
    drained = BoundedJoinQueue(join_timeout=30)
    drained.put("taken")
    drained.get()
    drained.task_done()
    start = time.monotonic()
    drained.join()
    assert time.monotonic() - start < 0.1


def test_guard_refuses_a_mode_it_does_not_cover() -> None:
    from flask import Flask
    from flask_socketio import SocketIO

    socketio = SocketIO(Flask(__name__), async_mode="threading")
    bound_socket_close(socketio)
    assert isinstance(socketio.server.eio.create_queue(), BoundedJoinQueue)
    socketio.server.eio.async_mode = "eventlet"  # as if the app had chosen it
    with pytest.raises(ValueError, match="covers async_mode='threading' only"):
        bound_socket_close(socketio)
