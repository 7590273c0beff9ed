"""Helpers of the tests that drive a real stack through the CLI (``up --detach``, ``scale``, ``upgrade``, ``down``).

Shared by tests/strangler/test_supervise.py and test_bluegreen.py: run the
real command, wait for a state, read ``status --json``, keep a steady load.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
STRANGLER = str(Path(sys.executable).parent / "strangler")


def strangler(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the real CLI as a user would."""
    return subprocess.run([STRANGLER, *args], capture_output=True, text=True, timeout=timeout)


def wait_for(check: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``check`` until truthy; return the seconds it took, fail naming ``what`` otherwise."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            pytest.fail(f"{what}: not within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - began


def free_ports_plan(base: Path, extra: str = "", edit: Callable[[str], str] = lambda text: text) -> Path:
    """The repository's plan on free ports (``edit`` changes its text, ``extra`` is appended)."""
    text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", (REPO / "strangler.toml").read_text(), flags=re.M)
    plan = base / "strangler.toml"
    plan.write_text(edit(text) + extra)
    return plan


@contextmanager
def detached_stack(plan: Path, run_dir: Path) -> Iterator[dict]:
    """``strangler up --detach`` of ``plan``; ``down`` at the end (and every process left, by PID)."""
    from router.etcd import Etcd
    from strangler.stack import procs

    result = strangler("up", "--detach", "--plan", str(plan), "--run-dir", str(run_dir))
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        state = json.loads((run_dir / "state.json").read_text())
        yield {"state": state, "run_dir": run_dir, "plan": plan, "up": result.stdout, "etcd": Etcd(state["etcd"])}
    finally:
        strangler("down", "--run-dir", str(run_dir))
        for record in procs.read_pidfiles(run_dir).values():  # only if down itself failed
            record.stop()


def status(stack: dict) -> dict:
    """``strangler status --json`` of the stack."""
    result = strangler("status", "--json", "--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"]))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def instances(stack: dict, backend: str) -> list[dict]:
    """``backend``'s instances as ``status --json`` shows them."""
    return next(row for row in status(stack)["backends"] if row["backend"] == backend)["instances"]


class Load:
    """Steady, bounded GET load through Traefik in a thread: counts answers by status.

    ``times`` keeps (start time, status) of each request, for tests that judge
    requests by when they were sent.
    """

    def __init__(self, url: str, limit: int = 20000, seconds: float = 120) -> None:
        self.url, self.limit, self.seconds = url, limit, seconds
        self.codes: dict[object, int] = {}
        self.times: list[tuple[float, object]] = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        session = requests.Session()
        began, sent = time.monotonic(), 0
        while not self.stop and sent < self.limit and time.monotonic() - began < self.seconds:
            at = time.monotonic()
            try:
                code: object = session.get(self.url, timeout=10).status_code
            except requests.RequestException as exc:
                code = type(exc).__name__
            self.codes[code] = self.codes.get(code, 0) + 1
            self.times.append((at, code))
            sent += 1
            time.sleep(0.01)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop = True
        self.thread.join(30)
