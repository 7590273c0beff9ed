"""Gunicorn's control socket (router/gunicorn_hooks.py ``control_socket_settings``), on real masters.

Gunicorn 25.1+ opens a control socket in every master at one default path
per user (``~/.gunicorn/gunicorn.ctl``). Several backends started with our
configs must not share it: it is off by default, and ``STRANGLER_CONTROL_SOCKET``
gives an instance a path of its own. Observed from the filesystem and from
the unix sockets each running master holds (``/proc``).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from servers import start_server, stop_server

from strangler.stack import procs

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
MONOLITH = ["gunicorn", "-c", "python:monolith.gunicorn_conf", "monolith.wsgi:app"]
UI = ["gunicorn", "-c", "python:extracted.ui.gunicorn_conf", "extracted.ui.wsgi:app"]
STRANGLER_MONOLITH = ["strangler", "monolith", "--host", "127.0.0.1"]


def unix_paths(pid: int) -> set[str]:
    """The paths of the unix sockets process *pid* holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    paths = set()
    with open("/proc/net/unix") as table:
        next(table)
        for fields in (line.split() for line in table):
            if len(fields) > 7 and fields[6] in inodes:
                paths.add(fields[7])
    return paths


def env_for(tmp: Path, name: str, **extra: str) -> dict[str, str]:
    """An environment whose home (where gunicorn's default control socket goes) is in *tmp*."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "SOCKETIO_MESSAGE_QUEUE", "STRANGLER_ETCD", "XDG_RUNTIME_DIR")}
    env.update(HOME=str(tmp / "home"), STRANGLER_DATA_DIR=str(tmp / name),
               DATABASE_URL=f"sqlite:///{tmp / name}.sqlite", SECRET_KEY=uuid.uuid4().hex,
               JWT_SECRET_KEY=uuid.uuid4().hex, MONOLITH_LOGLEVEL="debug",
               STRANGLER_LOGLEVEL="debug", **extra)
    return env


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    """Start a backend command on a free port; yield a starter returning (pid, log path)."""
    with ExitStack() as stack:

        def run(name: str, cmd: list[str], **extra: str) -> tuple[int, Path]:
            port = procs.free_port()
            argv = [str(BIN / cmd[0]), *cmd[1:], "--port" if cmd[0] == "strangler" else "--bind",
                    str(port) if cmd[0] == "strangler" else f"127.0.0.1:{port}"]
            log = tmp_path / f"{name}.log"
            proc = start_server(argv, env_for(tmp_path, name, **extra), f"http://127.0.0.1:{port}",
                                log, name)
            stack.callback(stop_server, proc)
            return proc.pid, log

        yield run


def control_server_settled(log: Path, path: Path) -> bool:
    """Whether the master has passed the point where it opens its control socket."""
    return "Control socket disabled" in log.read_text() or path.exists()


def test_masters_open_no_control_socket_by_default(start, tmp_path: Path) -> None:
    shared = tmp_path / "home" / ".gunicorn" / "gunicorn.ctl"
    masters = [start("strangler-monolith", STRANGLER_MONOLITH), start("monolith", MONOLITH),
               start("ui", UI)]
    for _pid, log in masters:
        procs.wait_until(lambda log=log: control_server_settled(log, shared), 20, f"{log.name} start")
    assert not shared.exists()
    for pid, _log in masters:
        assert not any(p.endswith(".ctl") for p in unix_paths(pid)), unix_paths(pid)


def test_each_master_gets_the_control_socket_it_is_given(start, tmp_path: Path) -> None:
    ctl = {name: tmp_path / f"{name}.ctl" for name in ("monolith", "ui")}
    masters = {name: start(name, cmd, STRANGLER_CONTROL_SOCKET=str(ctl[name]))
               for name, cmd in (("monolith", MONOLITH), ("ui", UI))}
    for name, (pid, _log) in masters.items():
        procs.wait_until(lambda pid=pid, name=name: str(ctl[name]) in unix_paths(pid), 20,
                         f"{name}'s control socket")
        assert {p for p in unix_paths(pid) if p.endswith(".ctl")} == {str(ctl[name])}
    assert not (tmp_path / "home" / ".gunicorn" / "gunicorn.ctl").exists()
