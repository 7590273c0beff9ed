"""``strangler console``: serves the page in the foreground; beyond loopback only with a password."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from strangler.cli import cli
from strangler.stack import procs

REPO = Path(__file__).resolve().parents[3]
STRANGLER = str(Path(sys.executable).parent / "strangler")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(REPO / "strangler.toml", tmp_path / "strangler.toml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STRANGLER_CONSOLE_PASSWORD", raising=False)
    return tmp_path


def test_another_address_without_a_password_is_refused_in_one_line(workdir: Path) -> None:
    result = CliRunner().invoke(cli, ["console", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "STRANGLER_CONSOLE_PASSWORD" in line and "127.0.0.1" in line


@pytest.mark.integration
def test_it_serves_the_page_until_stopped_and_says_no_stack_runs(workdir: Path) -> None:
    port = procs.free_port()
    proc = subprocess.Popen([STRANGLER, "console", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        procs.wait_until(lambda: procs.http_ok(base + "/healthz"), 30, "strangler console")
        page = requests.get(base + "/", timeout=5)
        assert page.status_code == 200 and 'name="csrf-token"' in page.text
        state = requests.get(base + "/api/state", timeout=10).json()
        assert any("no stack runs from" in problem for problem in state["problems"])
        assert len(state["routes"]) == 0 and state["strategy"] == "incremental"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert f"console: {base}/" in out.decode()
