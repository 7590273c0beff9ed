"""``strangler monolith``: help, a busy port, and a real run stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from strangler.cli import cli


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_help_lists_the_options():
    result = CliRunner().invoke(cli, ["monolith", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--database", "--workers", "--threads"):
        assert option in result.output
    assert "monolith" in CliRunner().invoke(cli, ["--help"]).output


def test_port_in_use_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("STRANGLER_DATA_DIR", str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["monolith", "--port", str(port)])
    assert result.exit_code == 1
    assert f"port {port}" in result.output and "--port" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["--port", "0"], ["--port", "70000"], ["--threads", "0"]])
def test_bad_numbers_are_usage_errors(args):
    result = CliRunner().invoke(cli, ["monolith", *args])
    assert result.exit_code == 2


def test_unreachable_database_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("STRANGLER_DATA_DIR", str(tmp_path))
    url = f"postgresql+psycopg2://nobody:hunter2@127.0.0.1:{free_port()}/x"
    result = CliRunner().invoke(cli, ["monolith", "--port", str(free_port()), "--database", url])
    assert result.exit_code == 1
    assert "cannot migrate" in result.output and "hunter2" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.integration
def test_serves_until_ctrl_c_and_exits_cleanly(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "STRANGLER_DATA_DIR": str(tmp_path / "data"), "STRANGLER_ENV": "development"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "strangler"), "monolith", "--port", str(port), "--threads", "8"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        assert (tmp_path / "data" / "monolith.sqlite").exists()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.strip() == f"Flack is running at http://127.0.0.1:{port}/ (Ctrl-C to stop)"
    assert "Traceback" not in err


def private(path: Path) -> bool:
    """Nobody but the owner may read, write or enter *path*."""
    return path.stat().st_mode & 0o077 == 0


@pytest.mark.integration
def test_the_data_dir_and_database_are_the_owners_only(tmp_path: Path):
    from servers import child_env, start_server, stop_server

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "state" / "data"  # neither exists yet: the monolith makes both
    env = child_env(data, STRANGLER_ENV="development")
    proc = start_server([str(Path(sys.executable).parent / "strangler"), "monolith", "--port", str(port)],
                        env, base, tmp_path / "server.log", name="strangler monolith")
    try:
        body = b'{"nickname": "private", "password": "pw"}'
        request = urllib.request.Request(f"{base}/api/users", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201
        made = sorted(p.name for p in data.iterdir())
        assert {"monolith.sqlite", "monolith.sqlite-wal", "secrets.json"} <= set(made), made
        for path in (tmp_path / "state", data, *data.iterdir()):
            assert private(path), f"{path} is {oct(path.stat().st_mode & 0o777)}"
    finally:
        stop_server(proc)
