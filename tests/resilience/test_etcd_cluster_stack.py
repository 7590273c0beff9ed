"""A stack on a three-member etcd cluster: losing any member (the leader too) loses no request and no flip.

``strangler up --detach --etcd-members 3`` of the repository's plan on free
ports. Under steady bounded load through Traefik, the member that leads is
killed (SIGKILL, by PID) while 50 flips and rollbacks go on through the CLI;
the supervisor restarts the member, which rejoins from its data dir.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from strangler.plan import load_plan
from strangler.stack import procs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STRANGLER = str(Path(sys.executable).parent / "strangler")
FLIPS = 50  # flips and rollbacks, each confirmed live through Traefik


def strangler(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([STRANGLER, *args], capture_output=True, text=True, timeout=timeout)


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("etcd-cluster-stack")
    plan = base / "strangler.toml"
    plan.write_text(re.sub(r"^(\w+_port) = \d+", r"\1 = 0", (REPO / "strangler.toml").read_text(), flags=re.M))
    run_dir = load_plan(plan).run_dir  # the routing commands find the stack through the plan's run dir
    result = strangler("up", "--detach", "--etcd-members", "3", "--plan", str(plan))
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield {"plan": plan, "run_dir": run_dir, "state": json.loads((run_dir / "state.json").read_text()),
               "up": result.stdout}
    finally:
        strangler("down", "--run-dir", str(run_dir))
        for record in procs.read_pidfiles(run_dir).values():  # only if down itself failed
            record.stop()


def members(stack: dict) -> list[dict]:
    result = strangler("status", "--json", "--plan", str(stack["plan"]))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["etcd_members"]


def test_up_starts_three_members_and_every_client_gets_them_all(stack: dict) -> None:
    assert "3 members" in stack["up"]
    rows = members(stack)
    assert [r["name"] for r in rows] == ["etcd", "etcd-2", "etcd-3"]
    assert all(r["healthy"] and r["pid"] for r in rows) and sum(r["leader"] for r in rows) == 1
    urls = [r["url"] for r in rows]
    assert stack["state"]["etcd"] == ",".join(urls)
    traefik_yml = (stack["run_dir"] / "traefik.yml").read_text()
    assert all(u.removeprefix("http://") in traefik_yml for u in urls)


def test_killing_the_leader_under_load_loses_no_request_and_no_flip(stack: dict) -> None:
    web, plan = stack["state"]["web"], str(stack["plan"])
    before = json.loads(strangler("history", "--json", "--plan", plan).stdout)
    failures: list[str] = []
    sent = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal sent
        session = requests.Session()
        while not stop.is_set() and sent < 5000:
            try:
                answer = session.get(f"{web}/api/users", timeout=10)
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text[:100]}")
            except requests.RequestException as exc:
                failures.append(repr(exc))
            sent += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        leader = next(r for r in members(stack) if r["leader"])
        os.kill(leader["pid"], signal.SIGKILL)
        for i in range(FLIPS):
            verb = ("flip", "GET /api/users", "--to", "users") if i % 2 == 0 else ("rollback",)
            result = strangler(*verb, "--plan", plan)
            assert result.returncode == 0, result.stdout + result.stderr
        wait_for(lambda: all(r["healthy"] for r in members(stack)), 60, "the killed member back and healthy")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert sent > 50 and failures == [], failures[:5]
    after = json.loads(strangler("history", "--json", "--plan", plan).stdout)
    assert len(after) - len(before) == FLIPS  # each applied exactly once
    rows = {p["name"]: p for p in json.loads(strangler("status", "--json", "--plan", plan).stdout)["processes"]}
    assert rows[leader["name"]]["restarts"] == 1


class Load:
    """Two clients sending anonymous GETs through Traefik until stopped (bounded: 5000 each)."""

    def __init__(self, web: str) -> None:
        self.web, self.sent, self.failures = web, 0, []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(2)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        session = requests.Session()
        for _ in range(5000):
            if self._stop.is_set():
                return
            try:
                answer = session.get(f"{self.web}/api/users", timeout=10)
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code} {answer.text[:100]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.sent += 1
            time.sleep(0.02)


def _signal_members(stack: dict, names: list[str], sig: int) -> None:
    records = procs.read_pidfiles(stack["run_dir"])
    for name in names:
        os.kill(records[name].pid, sig)


def test_without_quorum_a_flip_never_half_applies_and_traffic_flows(stack: dict) -> None:
    plan, web = str(stack["plan"]), stack["state"]["web"]
    before = json.loads(strangler("history", "--json", "--plan", plan).stdout)
    frozen = ["etcd-2", "etcd-3"]  # stopped, not killed: no quorum, and the supervisor sees them alive
    outcome: dict = {}

    def flip() -> None:
        outcome["result"] = strangler("flip", "GET /api/users", "--to", "users", "--plan", plan, timeout=120)

    with Load(web) as load:
        _signal_members(stack, frozen, signal.SIGSTOP)
        attempt = threading.Thread(target=flip)
        try:
            attempt.start()
            attempt.join(8)  # quorum is lost for 8 s at most: well within the registrations' TTL
        finally:
            _signal_members(stack, frozen, signal.SIGCONT)
        attempt.join(120)
        wait_for(lambda: all(r["healthy"] for r in members(stack)), 60, "quorum back")
    result = outcome["result"]
    after = json.loads(strangler("history", "--json", "--plan", plan).stdout)
    if result.returncode == 0:  # it waited for quorum and went through: exactly once
        assert len(after) == len(before) + 1
        assert strangler("rollback", "--plan", plan).returncode == 0
    else:  # refused: one line, and nothing written
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert len(after) == len(before)
    assert load.sent > 20 and load.failures == [], load.failures[:5]


def test_etcd_wholly_down_for_10s_fails_no_request_to_routed_endpoints(stack: dict) -> None:
    names = [r["name"] for r in members(stack)]
    with Load(stack["state"]["web"]) as load:
        _signal_members(stack, names, signal.SIGSTOP)
        try:
            time.sleep(10)  # the state under test is "etcd gone for 10 s": it is the duration itself
        finally:
            _signal_members(stack, names, signal.SIGCONT)
        wait_for(lambda: all(r["healthy"] for r in members(stack)), 60, "etcd back")
        sent_back = load.sent
        wait_for(lambda: load.sent > sent_back + 50, 30, "more traffic after etcd came back")
    assert load.failures == [], load.failures[:5]
    assert members(stack) and all(r["healthy"] for r in members(stack))
