"""Hostile Socket.IO traffic against the real socketio service under gunicorn.

The service shares the monolith's guard (monolith/socketio_guard.py) against
python-engineio holding a request thread for ever. Around it everything is
real: Redis (the message queue), etcd (revocations), users and messages
(served from threads behind a small path dispatcher standing in for
Traefik). The service runs with 16 threads, so that 16 connected websockets
(each holding one) prove no thread is left busy after the attack.
"""

from __future__ import annotations

import sys
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
import sio_attack
from servers import serving

from monolith.tokens import issue_token
from strangler.stack import procs

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
THREADS = 16
SECRET = "jwt-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def platform(redis_server, etcd_server, tmp_path_factory):
    """users and messages behind one dispatcher; the socketio service under gunicorn. Yields its URL."""
    from extracted.messages import create_app as create_messages
    from extracted.users import create_app as create_users

    tmp = tmp_path_factory.mktemp("guarded")
    apps: dict = {}

    def dispatch(environ, start_response):
        target = "messages" if environ["PATH_INFO"].startswith("/api/messages") else "users"
        return apps[target](environ, start_response)

    with ExitStack() as stack:
        lb_url = stack.enter_context(serving(dispatch))
        shared = {"STRANGLER_ENV": "testing", "JWT_SECRET_KEY": SECRET,
                  "STRANGLER_ETCD": etcd_server.url, "STRANGLER_LB_URL": lb_url,
                  "SOCKETIO_MESSAGE_QUEUE": redis_server.url}
        for name, create in (("users", create_users), ("messages", create_messages)):
            apps[name] = create({**shared, "STRANGLER_DATA_DIR": str(tmp / name),
                                 "DATABASE_URL": f"sqlite:///{tmp / name}.sqlite"})
        stack.callback(apps["messages"].extensions["link_expander"].shutdown)
        port = procs.free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [str(BIN / "gunicorn"), "-c", "python:extracted.socketio.gunicorn_conf",
                "--bind", f"127.0.0.1:{port}", "extracted.socketio.wsgi:app"]
        env = {**shared, "STRANGLER_DATA_DIR": str(tmp / "sio"), "STRANGLER_THREADS": str(THREADS),
               "STRANGLER_BACKEND": "socketio-" + uuid.uuid4().hex[:6]}
        proc = procs.Proc(name="socketio", argv=argv, log_path=tmp / "socketio.log", env=env).start()
        stack.callback(proc.stop, 15)
        procs.wait_until(lambda: procs.http_ok(f"{url}/healthz"), 40, "socketio", proc=proc)
        yield {"lb": lb_url, "socketio": url}


def test_hostile_sequences_hold_no_thread(platform):
    base = platform["socketio"]
    created = requests.post(f"{platform['lb']}/api/users", timeout=10,
                            json={"nickname": "u" + uuid.uuid4().hex[:10], "password": "pw"})
    assert created.status_code == 201, created.text
    token = issue_token(created.json()["id"], created.json()["nickname"], SECRET)

    figures = sio_attack.check_survives(base, THREADS, token)
    print(f"socketio service after 200 hostile sequences: {figures}")
