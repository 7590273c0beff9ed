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


@pytest.mark.integration
def test_the_served_command_line_refuses_a_wider_bind_than_its_settings_say(workdir: Path) -> None:
    """The app learns its address from STRANGLER_CONSOLE_HOST; gunicorn binds what --bind says.
    Told 127.0.0.1 but bound to 0.0.0.0, it must not serve without a password."""
    from strangler.console.cli import console_argv, console_env

    port = procs.free_port()
    env = {**os.environ, **console_env(run_dir=workdir, plan=None, host="127.0.0.1")}
    proc = subprocess.Popen(console_argv("0.0.0.0", port), env=env, stdout=subprocess.PIPE,  # noqa: S104
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=15)
        pytest.fail("the console served on 0.0.0.0 without a password")
    assert proc.returncode == 2
    lines = [line for line in err.decode().splitlines() if "strangler console" in line]
    assert len(lines) == 1 and "STRANGLER_CONSOLE_PASSWORD" in lines[0]

    # with the password (the documented opt-in) it serves, and asks for it
    env["STRANGLER_CONSOLE_PASSWORD"] = "s3cret"
    proc = subprocess.Popen(console_argv("0.0.0.0", port), env=env, stdout=subprocess.DEVNULL,  # noqa: S104
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        procs.wait_until(lambda: procs.http_ok(base + "/healthz"), 30, "the console with a password")
        assert requests.get(base + "/api/state", timeout=10).status_code == 401
        assert requests.get(base + "/", auth=("any", "s3cret"), timeout=10).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
