"""``kill -9`` of one of two ``users`` instances under a bounded load of idempotent requests.

A real stack (``strangler up --detach`` of a copy of the plan, ``users`` with
``instances = 2``, its endpoints flipped to it) takes GETs through Traefik
from 4 threads; one instance's whole process group is SIGKILLed mid-load.
Traefik's retry middleware and health checks must hide it: not one request
fails, and the dead instance's registry keys are gone within the lease TTL.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from resilience_helpers import RunningStack, register, running_stack, wait_for

from router import registry
from router.etcd import Etcd

pytestmark = pytest.mark.integration

CLIENTS = 4
# The instances' registry lease (STRANGLER_REGISTRY_TTL; 20 s by default, which only makes the
# wait for the dead instance's keys to vanish longer: what is tested is that they do, by the TTL).
TTL = 6
BEFORE_KILL = 3.0  # seconds of load before the kill
AFTER_KILL = TTL + 3.0  # and after it: past the TTL, so Traefik has dropped the dead server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The plan's stack with two ``users`` instances and its endpoints flipped to ``users``."""
    with running_stack(tmp_path_factory.mktemp("kill9"), instances={"users": 2}, flip=("users",),
                       env={"STRANGLER_REGISTRY_TTL": str(TTL)}) as running:
        yield running


class Load:
    """``CLIENTS`` threads sending GETs through Traefik (one keep-alive session each) until stopped."""

    def __init__(self, web: str, paths: list[str]) -> None:
        self.web, self.paths = web, paths
        self.stop = threading.Event()
        self.sent = 0
        self.failures: list[tuple[float, str, str]] = []  # (when, path, what went wrong)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(CLIENTS)]

    def run(self, n: int) -> None:
        with requests.Session() as session:
            k = n
            while not self.stop.is_set():
                path = self.paths[k % len(self.paths)]
                k += 1
                try:
                    answer = session.get(self.web + path, timeout=10)
                    failure = None if answer.status_code == 200 else f"{answer.status_code} {answer.text[:80]}"
                except requests.RequestException as exc:
                    failure = f"{type(exc).__name__}: {exc}"[:160]
                with self.lock:
                    self.sent += 1
                    if failure:
                        self.failures.append((time.monotonic(), path, failure))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


def failed_in_access_log(run_dir: Path) -> list[dict]:
    """Traefik's access-log entries of requests not answered 2xx (for the failure message)."""
    entries = []
    for line in (run_dir / "logs" / "traefik-access.log").read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not 200 <= (entry.get("DownstreamStatus") or 0) < 300:  # 0: no answer at all
            entries.append({k: entry.get(k) for k in ("RequestPath", "DownstreamStatus", "OriginStatus",
                                                        "RetryAttempts", "ServiceURL", "Duration")})
    return entries


def test_kill9_of_one_instance_loses_no_idempotent_request(stack: RunningStack) -> None:
    ids = [register(stack.web)[2] for _ in range(3)]
    etcd = Etcd(stack.state["etcd"])
    victim = stack.record("users.1")
    victim_url = stack.instance_url("users.1")
    survivor_url = stack.instance_url("users.0")
    assert sorted(i.url for i in registry.instances(etcd, "users")) == sorted([victim_url, survivor_url])
    paths = ["/api/users", *(f"/api/users/{i}" for i in ids)]

    with Load(stack.web, paths) as load:
        time.sleep(BEFORE_KILL)
        before = load.sent
        killed_at = time.monotonic()
        os.killpg(victim.pid, signal.SIGKILL)  # the master and its worker: the whole instance dies
        left = wait_for(lambda: all(i.url != victim_url for i in registry.instances(etcd, "users")), TTL + 5)
        time.sleep(max(0.0, AFTER_KILL - (time.monotonic() - killed_at)))

    print(f"\nkill -9 under load: {load.sent} requests sent ({before} before the kill), "
          f"{len(load.failures)} failed; the dead instance left the registry after "
          f"{left if left is None else round(left, 2)} s (TTL {TTL} s)")
    assert load.sent > before > 0, "the load did not run"
    kinds = Counter(failure for _, _, failure in load.failures)
    assert not load.failures, (
        f"{len(load.failures)} of {load.sent} requests failed: {dict(kinds)}; first at "
        f"{load.failures[0][0] - killed_at:+.2f} s from the kill; Traefik saw "
        f"{failed_in_access_log(stack.run_dir)[:10]}")
    assert left is not None and left <= TTL + 1.0, f"the dead instance stayed registered for {left} s"
    assert [i.url for i in registry.instances(etcd, "users")] == [survivor_url]


def test_the_survivor_serves_everything_after_the_kill(stack: RunningStack) -> None:
    # runs after the kill: Traefik balances over the one instance left
    served = requests.get(f"{stack.state['traefik_api']}/api/http/services/users@etcd", timeout=5).json()
    assert [s["url"] for s in served["loadBalancer"]["servers"]] == [stack.instance_url("users.0")]
    with requests.Session() as session:
        answers = [session.get(f"{stack.web}/api/users", timeout=10).status_code for _ in range(20)]
    assert answers == [200] * 20
