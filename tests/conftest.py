"""Shared fixtures: real etcd, Traefik and Redis, started once per test module.

Each process listens on free loopback ports, keeps its data and log in a
temporary directory and is stopped by PID when the module's tests are done.
Tests sharing a module share the process, so they should use their own key
names (a backend name of their own, say) rather than wipe the store.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# pytest's default (prepend) import mode put tests/ on sys.path to import this
# file; from there tests/monolith, tests/router and tests/strangler would
# shadow the real packages as namespace packages (`from monolith import
# create_app` then fails). Take it off again before importing anything.
_TESTS_DIR = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _TESTS_DIR]
# helpers every test folder shares (``import servers``); only this folder, so
# nothing in it can shadow a real package
sys.path.insert(0, str(Path(_TESTS_DIR) / "support"))

import pytest  # noqa: E402

from strangler.stack import procs  # noqa: E402

# The suite is one client registering and logging in hundreds of users a
# minute; the per-client limits (RATE_LIMIT_*) would refuse it. The settings
# reach every app and server the tests start, through the environment; tests
# of the limits themselves set low ones and stay within a few calls.
for _name in ("RATE_LIMIT_LOGIN", "RATE_LIMIT_REGISTER"):
    os.environ.setdefault(_name, "100000 per minute")
# Each registration, login and password change through a stack's monolith or users
# service hashes with scrypt (about 70 ms of CPU each, more on a busy machine): the
# stacks the tests start use the cheap hash the testing profile already uses. That
# every other profile defaults to scrypt is tested in tests/monolith/test_config.py.
os.environ.setdefault("PASSWORD_HASH_METHOD", "pbkdf2:sha256:1000")
# A suite started in the background by a non-interactive shell (`cmd &`, as a CI runner may)
# inherits SIGINT ignored, and so would every process a test starts: the tests that send a
# Ctrl-C to one would then pass or fail by which module ran first in their worker (one that
# set a Python handler for SIGINT made later children take it again). Take Ctrl-C as a
# terminal gives it, in this process (each xdist worker reads this file) and its children.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class EtcdServer:
    """A running etcd: ``url`` is its client URL."""

    url: str
    proc: procs.Proc
    data_dir: Path

    def client(self):
        """A fresh ``router.etcd.Etcd`` connected to this server."""
        from router.etcd import Etcd

        return Etcd.connect(self.url)


@dataclass
class TraefikServer:
    """A running Traefik reading ``etcd``: ``web_url`` serves traffic, ``api`` reads its state."""

    web_url: str
    internal_url: str
    api_url: str
    api: object  # router.traefik.TraefikAPI
    proc: procs.Proc
    etcd: EtcdServer
    config_path: Path
    access_log: Path


@dataclass
class RedisServer:
    """A running redis-server without persistence: ``url`` is ``redis://127.0.0.1:<port>/0``."""

    url: str
    port: int
    proc: procs.Proc


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A real etcd for this module (fsync off: the data is thrown away)."""
    data_dir = tmp_path_factory.mktemp("etcd")
    proc = procs.start_etcd(data_dir, procs.free_port(), procs.free_port(), unsafe_no_fsync=True)
    try:
        yield EtcdServer(url=proc.url, proc=proc, data_dir=data_dir)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def traefik_server(
    etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TraefikServer]:
    """A real Traefik for this module, its routing read from ``etcd_server`` under ``traefik/``,
    with the toolkit's three entrypoints (``internal_url``: the services' one)."""
    from router.traefik import TraefikAPI, seed_root_key, static_config, write_static_config

    workdir = tmp_path_factory.mktemp("traefik")
    web_port, api_port, internal_port = procs.free_port(), procs.free_port(), procs.free_port()
    access_log = workdir / "access.log"
    cfg = static_config(
        web_port=web_port,
        api_port=api_port,
        etcd_endpoints=[etcd_server.url],
        access_log_path=str(access_log),
        internal_port=internal_port,
    )
    config_path = write_static_config(workdir / "traefik.yml", cfg)
    seed_root_key(etcd_server.client())
    proc = procs.start_traefik(config_path)
    try:
        yield TraefikServer(
            web_url=f"http://127.0.0.1:{web_port}",
            internal_url=f"http://127.0.0.1:{internal_port}",
            api_url=proc.url,
            api=TraefikAPI(proc.url),
            proc=proc,
            etcd=etcd_server,
            config_path=config_path,
            access_log=access_log,
        )
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for this module, on a free port, nothing written to disk."""
    port = procs.free_port()
    proc = procs.start_redis(port, tmp_path_factory.mktemp("redis"))
    try:
        yield RedisServer(url=proc.url, port=port, proc=proc)
    finally:
        proc.stop()


PACKAGES = ("strangler", "router", "monolith", "extracted", "datalink", "migrations")


def pytest_configure(config: pytest.Config) -> None:
    """Compile the project's modules once, before any test starts a Python process.

    Where PYTHONDONTWRITEBYTECODE is set (as on some CI runners), no process
    writes a ``.pyc``, so every CLI call, backend and gunicorn worker the tests
    start would compile the project's sources again: 0.1-0.3 s of CPU each,
    hundreds of times a run. Already compiled files are left as they are; the
    variable still keeps every other process from writing.
    """
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has done it
        return
    import compileall

    root = Path(_TESTS_DIR).parent
    for package in PACKAGES:
        compileall.compile_dir(root / package, quiet=2, workers=0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Send the longest test modules to the parallel workers first (tests/support/spread.py)."""
    import spread

    spread.spread(items, spread.read_durations())
