"""Fixtures for the routing layer's tests: a real etcd on free ports."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from router.etcd import Etcd

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_etcd(
    data_dir: Path, log: Path, max_txn_ops: int | None = 20000
) -> tuple[subprocess.Popen, str]:
    """Start etcd on free loopback ports; returns the process and its client URL."""
    client, peer = free_port(), free_port()
    url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    proc = subprocess.Popen(
        [
            str(BIN / "etcd"),
            "--name=test",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--log-level=warn",
            *([f"--max-txn-ops={max_txn_ops}"] if max_txn_ops else []),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    """Stop a process we started, by its PID."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def kv_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh etcd for this test module (--max-txn-ops 20000), stopped afterwards."""
    base = tmp_path_factory.mktemp("etcd")
    proc, url = start_etcd(base / "data", base / "etcd.log")
    try:
        Etcd.connect(url, wait=20)
    except Exception:
        stop(proc)
        raise
    yield url
    stop(proc)


@pytest.fixture
def kv(kv_url: str) -> Iterator[Etcd]:
    """A client on the module's etcd, starting from an empty keyspace."""
    client = Etcd.connect(kv_url)
    client.delete_prefix("")
    yield client


@pytest.fixture
def etcd_factory(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start extra etcds (e.g. with other flags); all stopped after the test."""
    procs: list[subprocess.Popen] = []

    def start(max_txn_ops: int | None = 20000) -> str:
        proc, url = start_etcd(tmp_path / f"data{len(procs)}", tmp_path / "etcd.log", max_txn_ops)
        procs.append(proc)
        Etcd.connect(url, wait=20)
        return url

    yield start
    for proc in procs:
        stop(proc)
