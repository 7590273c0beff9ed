"""Faults of a three-member etcd under steady load: failed requests, flip latency, election and failover.

Starts a real stack (``strangler up --detach --etcd-members 3``, the
repository's plan on free loopback ports, a run dir in a temporary folder)
and keeps a steady load of anonymous ``GET /api/users`` through Traefik's
web port (``--clients`` threads at ``--rate`` requests per second each).
Then, each phase under that load:

- flips, healthy: ``--flips`` CLI flips/rollbacks of ``GET /api/users``,
  wall time each (the baseline);
- flips, one member down: the same with ``etcd-3`` killed while the
  supervisor is paused (so it stays down), then restarted by it;
- leader killed: SIGKILL of the member that leads; time until the others
  agree on a new leader, and until a client listing the killed member first
  has written through another one (the supervisor restarts the member);
- no quorum: two members stopped for ``--outage`` seconds;
- etcd down: all three stopped for ``--outage`` seconds.

Prints the requests sent and failed per phase, flip p50/p99 healthy vs with
a member down (the ratio is the figure: same run, same machine), the
election and failover times. Every process is stopped by ``strangler down``.

    .venv/bin/python bench/etcd_faults.py
    .venv/bin/python bench/etcd_faults.py --flips 20 --outage 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STRANGLER = str(Path(sys.executable).parent / "strangler")

from router.etcd import Etcd  # noqa: E402 - after the path is set
from strangler.stack import cluster, procs  # noqa: E402


class Load:
    """``clients`` threads at ``rate`` req/s each; counts sent and failed by phase."""

    def __init__(self, web: str, clients: int, rate: float) -> None:
        self.web, self.clients, self.rate = web, clients, rate
        self.phase = "warm-up"
        self.sent: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.samples: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        session = requests.Session()
        for _ in range(200_000):  # bounded, whatever the phases take
            if self._stop.wait(1 / self.rate):
                return
            phase = self.phase
            try:
                answer = session.get(f"{self.web}/api/users", timeout=10)
                ok, what = answer.status_code == 200, f"{answer.status_code} {answer.text[:80].strip()}"
            except requests.RequestException as exc:
                ok, what = False, type(exc).__name__
            self.sent[phase] += 1
            if not ok:
                self.failed[phase] += 1
                self.samples.setdefault(phase, what)


def strangler(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([STRANGLER, *args], capture_output=True, text=True, timeout=timeout)


def wait_for(check, timeout: float, what: str) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise SystemExit(f"bench: {what} not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - began


def flip_times(plan: str, count: int) -> list[float]:
    times = []
    for i in range(count):
        verb = ("flip", "GET /api/users", "--to", "users") if i % 2 == 0 else ("rollback",)
        began = time.monotonic()
        result = strangler(*verb, "--plan", plan)
        times.append(time.monotonic() - began)
        if result.returncode != 0:
            raise SystemExit(f"bench: {' '.join(verb)} failed: {result.stderr.strip()}")
    if count % 2:
        strangler("rollback", "--plan", plan)
    return times


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second per client")
    parser.add_argument("--flips", type=int, default=10)
    parser.add_argument("--outage", type=float, default=8.0, help="seconds of no quorum / etcd down")
    args = parser.parse_args()
    if not (1 <= args.clients <= 16 and 0 < args.rate <= 200 and 2 <= args.flips <= 200
            and 1 <= args.outage <= 15):
        parser.error("keep --clients 1-16, --rate 0-200, --flips 2-200, --outage 1-15 (leases last 20 s)")

    with tempfile.TemporaryDirectory(prefix="bench-etcd-faults-") as tmp:
        plan = Path(tmp) / "strangler.toml"
        plan.write_text(re.sub(r"^(\w+_port) = \d+", r"\1 = 0", (REPO / "strangler.toml").read_text(),
                               flags=re.M))
        began = time.monotonic()
        up = strangler("up", "--detach", "--etcd-members", "3", "--plan", str(plan), timeout=300)
        if up.returncode != 0:
            raise SystemExit(f"bench: up failed: {up.stdout}{up.stderr}")
        print(f"stack up with 3 etcd members in {time.monotonic() - began:.1f}s "
              f"(load average {os.getloadavg()[0]:.1f})")
        run_dir = Path(tmp) / ".strangler"
        state = json.loads((run_dir / "state.json").read_text())
        members = [cluster.Member.from_dict(m) for m in state["etcd_members"]]
        load = Load(state["web"], args.clients, args.rate).start()
        figures: dict[str, str] = {}
        try:
            time.sleep(2)  # warm-up traffic, not counted
            load.phase = "flips, healthy"
            healthy = flip_times(str(plan), args.flips)

            load.phase = "flips, one member down"
            # killed, with the supervisor paused so it stays down (a member that hangs
            # instead, SIGSTOP, stalls Traefik's etcd watch: see docs/scaling.md)
            records = procs.read_pidfiles(run_dir)
            os.kill(records["supervisor"].pid, signal.SIGSTOP)
            try:
                os.kill(records["etcd-3"].pid, signal.SIGKILL)
                degraded = flip_times(str(plan), args.flips)
            finally:
                os.kill(records["supervisor"].pid, signal.SIGCONT)
            wait_for(lambda: all(r["healthy"] for r in cluster.members_status(members)), 60, "etcd-3 back")

            load.phase = "leader killed"
            leader = cluster.leader(members)
            others = [m for m in members if m != leader]
            client = Etcd([leader.url, *(m.url for m in others)], timeout=2)
            client.put("bench/warm", "1")
            victim = procs.read_pidfiles(run_dir)[leader.name]
            os.kill(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            election = wait_for(lambda: cluster.leader(others) is not None, 30, "a new leader")
            client.put("bench/after", "1")  # through another member: the failover
            failover = time.monotonic() - killed
            wait_for(lambda: all(r["healthy"] for r in cluster.members_status(members)), 60, "member back")

            for phase, names in (("no quorum", ["etcd-2", "etcd-3"]),
                                 ("etcd down", [m.name for m in members])):
                load.phase = phase
                records = procs.read_pidfiles(run_dir)
                for name in names:
                    os.kill(records[name].pid, signal.SIGSTOP)
                time.sleep(args.outage)  # the fault is a duration
                for name in names:
                    os.kill(records[name].pid, signal.SIGCONT)
                wait_for(lambda: all(r["healthy"] for r in cluster.members_status(members)), 60, "quorum")
                time.sleep(3)  # requests right after it count in this phase too
            load.phase = "done"
        finally:
            load.stop()
            strangler("down", "--plan", str(plan))

        print(f"\n{'phase':<26}{'sent':>8}{'failed':>8}  sample")
        for phase in ("flips, healthy", "flips, one member down", "leader killed", "no quorum", "etcd down"):
            print(f"{phase:<26}{load.sent[phase]:>8}{load.failed[phase]:>8}  {load.samples.get(phase, '')}")
        figures["flip p50 / p99, healthy"] = f"{p(healthy, .5) * 1000:.0f} / {p(healthy, .99) * 1000:.0f} ms"
        figures["flip p50 / p99, one member down"] = (
            f"{p(degraded, .5) * 1000:.0f} / {p(degraded, .99) * 1000:.0f} ms "
            f"({statistics.median(degraded) / statistics.median(healthy):.2f}x the healthy p50)")
        figures["leader killed -> new leader"] = f"{election * 1000:.0f} ms"
        figures["leader killed -> client wrote elsewhere"] = f"{failover * 1000:.0f} ms"
        print()
        for name, value in figures.items():
            print(f"{name:<42}{value}")


if __name__ == "__main__":
    main()
