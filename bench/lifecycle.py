"""Failed requests under steady load while instances come and go: scale 1 -> 3 -> 1, a rolling upgrade, blue/green.

Starts a real stack (``strangler up --detach``, the repository's plan on free
loopback ports, a run dir in a temporary folder, the users service's
per-client rate limits lifted), flips ``GET /api/users``, ``POST
/api/users``, ``GET /api/messages`` and ``POST /api/messages`` to their
services, and keeps a steady load on them through Traefik's web port:
``--clients`` threads, each at ``--rate`` requests per second, cycling
through two GETs of users, one POST registering a new user, two GETs of
messages and one POST of a message (GETs are retried by Traefik elsewhere on
a refused connection or a 502; POSTs never: one fails if it reaches an
instance that is going away).

Phases, each under the same load, each bounded (``--phase`` seconds of
load at most around the command):

- baseline: ``--baseline`` seconds with nothing changing;
- scale: ``strangler scale users=3``, then ``strangler scale users=1``;
- roll: with 3 instances, ``strangler upgrade users roll --release bench-2``
  (each old instance replaced: new one healthy, then the old drained), then
  back to 1;
- blue/green: with 2 messages instances, ``strangler upgrade messages
  --blue-green --release bench-bg`` (a second set of 2, every messages route
  switched in one transaction), then ``--rollback`` (switched back, the new
  set drained).

Prints per phase the requests sent, failed (with a sample of the errors)
and the time each command took. Every process is stopped by ``strangler down``.

    .venv/bin/python bench/lifecycle.py
    .venv/bin/python bench/lifecycle.py --clients 4 --rate 20
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
STRANGLER = str(Path(sys.executable).parent / "strangler")
# every POST registers a user: lift the per-client limits for the servers this starts
for _name in ("RATE_LIMIT_LOGIN", "RATE_LIMIT_REGISTER"):
    os.environ.setdefault(_name, "100000 per minute")


class Load:
    """``clients`` threads at ``rate`` req/s each, three GETs to one POST; counts by phase."""

    def __init__(self, web: str, clients: int, rate: float, token: str) -> None:
        self.web, self.clients, self.rate = web, clients, rate
        self.auth = {"Authorization": f"Bearer {token}"}
        self.phase = "warm-up"
        self.sent: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.errors: dict[str, list[str]] = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self) -> None:
        session = requests.Session()
        interval, n = 1.0 / self.rate, 0
        due = time.monotonic()
        while not self.stop.is_set():
            n += 1
            phase = self.phase
            try:
                if n % 6 in (1, 2):
                    answer = session.get(f"{self.web}/api/users", timeout=10)
                    ok = answer.status_code == 200
                elif n % 6 == 0:
                    answer = session.post(f"{self.web}/api/users", timeout=10, json={
                        "nickname": f"b{uuid.uuid4().hex[:12]}", "password": "pw"})
                    ok = answer.status_code == 201
                elif n % 6 in (3, 5):
                    answer = session.get(f"{self.web}/api/messages", headers=self.auth, timeout=10)
                    ok = answer.status_code == 200
                else:
                    answer = session.post(f"{self.web}/api/messages", headers=self.auth, timeout=10,
                                          json={"source": f"bench {n}"})
                    ok = answer.status_code == 201
                error = "" if ok else f"{answer.request.method} {answer.status_code} {answer.text[:80]}"
            except requests.RequestException as exc:
                ok, error = False, f"{type(exc).__name__}: {str(exc)[:80]}"
            self.sent[phase] += 1
            if not ok:
                self.failed[phase] += 1
                self.errors.setdefault(phase, []).append(error)
            due += interval
            self.stop.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


def cli(*args: str, timeout: float = 300) -> float:
    """Run a strangler command; its wall time in seconds (exit on failure, showing why)."""
    began = time.monotonic()
    result = subprocess.run([STRANGLER, *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        sys.exit(f"strangler {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return time.monotonic() - began


def login(web: str) -> str:
    """A new user's token, for the messages requests."""
    nickname = f"bench{uuid.uuid4().hex[:8]}"
    requests.post(f"{web}/api/users", json={"nickname": nickname, "password": "pw"}, timeout=10).raise_for_status()
    answer = requests.post(f"{web}/api/tokens", auth=(nickname, "pw"), timeout=10)
    answer.raise_for_status()
    return answer.json()["token"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rate", type=float, default=15.0, help="requests per second per client")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of load with nothing changing")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", (REPO / "strangler.toml").read_text(), flags=re.M)
    plan = base / "strangler.toml"
    plan.write_text(text)
    run_dir = base / "run"
    where = ("--plan", str(plan), "--run-dir", str(run_dir))
    began = time.monotonic()
    cli("up", "--detach", *where)
    print(f"stack up in {time.monotonic() - began:.1f}s ({run_dir})")
    timings: dict[str, float] = {}
    try:
        state = json.loads((run_dir / "state.json").read_text())
        for service, endpoints in (("users", ("GET /api/users", "POST /api/users")),
                                   ("messages", ("GET /api/messages", "POST /api/messages"))):
            cli("flip", *endpoints, "--to", service, "--plan", str(plan),
                "--etcd", state["etcd"], "--traefik-api", state["traefik_api"])
        with Load(state["web"], args.clients, args.rate, login(state["web"])) as load:
            time.sleep(2)
            load.phase = "baseline"
            time.sleep(args.baseline)
            load.phase = "scale 1->3->1"
            timings["scale users=3"] = cli("scale", "users=3", *where)
            timings["scale users=1"] = cli("scale", "users=1", *where)
            time.sleep(1)
            load.phase = "rolling upgrade of 3"
            timings["scale users=3 (before the roll)"] = cli("scale", "users=3", *where)
            timings["upgrade users roll"] = cli("upgrade", "users", "roll", "--release", "bench-2", *where)
            timings["scale users=1 (after)"] = cli("scale", "users=1", *where)
            time.sleep(1)
            timings["scale messages=2 (before blue/green)"] = cli("scale", "messages=2", *where)
            load.phase = "blue/green of messages"
            timings["upgrade messages --blue-green"] = cli("upgrade", "messages", "--blue-green",
                                                           "--release", "bench-bg", *where)
            time.sleep(2)
            timings["upgrade messages --rollback"] = cli("upgrade", "messages", "--rollback", *where)
            time.sleep(1)
            load.phase = "done"
    finally:
        cli("down", "--run-dir", str(run_dir))
    print(f"\nload: {args.clients} client(s) x {args.rate:g} req/s through Traefik: GET /api/users x2, "
          "POST /api/users (new user), GET /api/messages x2, POST /api/messages, on their services")
    print(f"{'phase':<24}{'sent':>8}{'failed':>8}{'failed %':>10}")
    for phase in ("baseline", "scale 1->3->1", "rolling upgrade of 3", "blue/green of messages"):
        sent, failed = load.sent[phase], load.failed[phase]
        print(f"{phase:<24}{sent:>8}{failed:>8}{100 * failed / max(sent, 1):>9.2f}%")
        for error in load.errors.get(phase, [])[:3]:
            print(f"    e.g. {error}")
    print("\ncommand times (each returns once the new count is healthy and the surplus drained; --blue-green once "
          "the switch is live, --rollback once switched back and the new set drained):")
    for what, seconds in timings.items():
        print(f"  {what:<40}{seconds:6.1f}s")


if __name__ == "__main__":
    main()
