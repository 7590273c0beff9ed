"""The pinball penalty: the same requests through Traefik, served by the monolith, then by the services.

Starts a real stack (``strangler up --detach`` of a copy of the repository's
plan, every port free, a temporary run dir), then measures, in one run:

1. with every endpoint on the monolith: ``POST /api/tokens`` and
   ``GET /api/messages`` (``--seed`` messages posted first);
2. after flipping ``users``, ``tokens`` and ``messages`` to their services
   (as ``strangler flip --service S --to S`` does): the same two requests.
   ``POST /api/tokens`` now goes Traefik → tokens → Traefik → users: the
   extra hop is the "pinball". The services own their data, so the user and
   the messages are seeded again, in the services.

Each scenario sends ``--requests`` requests from ``--concurrency`` client
processes (one keep-alive session each), bounded by ``--duration`` seconds,
all on 127.0.0.1. It prints p50/p99 per scenario and the services/monolith
ratio (target for tokens: at most 1.5x). ``strangler down`` runs at the end,
also on failure or Ctrl-C.

    .venv/bin/python bench/pinball.py
    .venv/bin/python bench/pinball.py --requests 1000 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import requests

REPO = Path(__file__).resolve().parents[1]
STRANGLER = str(Path(sys.executable).parent / "strangler")
# many logins (and registrations) from one client: lift the per-client limits on
# them (the servers started here inherit this environment)
for _name in ("RATE_LIMIT_LOGIN", "RATE_LIMIT_REGISTER"):
    os.environ.setdefault(_name, "100000 per minute")
SERVICES = ("users", "tokens", "messages")
MAX_DURATION = 20.0


class Account(NamedTuple):
    """A user who can log in, and a token for reading messages."""

    nickname: str
    password: str
    token: str


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def strangler(*args: str) -> subprocess.CompletedProcess:
    """Run the real CLI; SystemExit with its output when it fails."""
    result = subprocess.run([STRANGLER, *args], capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise SystemExit(f"strangler {' '.join(args[:2])} failed:\n{result.stdout}{result.stderr}")
    return result


def seed(web: str, messages: int) -> Account:
    """Register a user, log in and post ``messages`` messages, through Traefik."""
    nickname, password = "pin" + secrets.token_hex(4), secrets.token_hex(8)
    with requests.Session() as session:
        session.post(f"{web}/api/users", json={"nickname": nickname, "password": password},
                     timeout=10).raise_for_status()
        answer = session.post(f"{web}/api/tokens", auth=(nickname, password), timeout=10)
        answer.raise_for_status()
        token = answer.json()["token"]
        for n in range(messages):
            session.post(f"{web}/api/messages", json={"source": f"pinball seed {n}"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10).raise_for_status()
    return Account(nickname, password, token)


def run_worker(args: tuple[str, str, Account, int, float]) -> tuple[list[float], int]:
    """Send up to ``count`` requests of ``scenario`` until ``deadline``; latencies (ms) and errors."""
    scenario, web, account, count, deadline = args
    latencies: list[float] = []
    errors = 0
    with requests.Session() as session:
        for _ in range(count):
            if time.time() >= deadline:
                break
            began = time.perf_counter()
            try:
                if scenario == "tokens":
                    answer = session.post(f"{web}/api/tokens", auth=(account.nickname, account.password),
                                          timeout=10)
                else:
                    answer = session.get(f"{web}/api/messages", timeout=10,
                                         headers={"Authorization": f"Bearer {account.token}"})
                ok = answer.status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - began) * 1000)
            else:
                errors += 1
    return latencies, errors


def measure(pool, scenario: str, web: str, account: Account, total: int, clients: int,
            duration: float) -> dict:
    """Split ``total`` requests over ``clients`` processes; p50/p99 of the successful ones."""
    deadline = time.time() + duration
    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    results = pool.map(run_worker, [(scenario, web, account, share, deadline) for share in shares])
    latencies = sorted(ms for result in results for ms in result[0])
    errors = sum(result[1] for result in results)
    return {"requests": len(latencies) + errors, "errors": errors,
            "p50": percentile(latencies, 0.50), "p99": percentile(latencies, 0.99)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="requests per scenario")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent client processes")
    parser.add_argument("--duration", type=float, default=MAX_DURATION,
                        help=f"time limit per scenario in seconds (at most {MAX_DURATION:g})")
    parser.add_argument("--seed", type=int, default=100, help="messages posted before measuring")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.duration <= 0 or args.seed < 0:
        parser.error("--requests, --concurrency and --duration must be positive, --seed >= 0")
    args.duration = min(args.duration, MAX_DURATION)
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure both layouts on one stack and print p50/p99 and the ratios."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="strangler-pinball-") as tmp:
        plan = Path(tmp) / "strangler.toml"
        plan.write_text(re.sub(r"^(\w+_port) = \d+", r"\1 = 0", (REPO / "strangler.toml").read_text(),
                               flags=re.M))
        run_dir = Path(tmp) / "run"
        strangler("up", "--detach", "--plan", str(plan), "--run-dir", str(run_dir))
        try:
            state = json.loads((run_dir / "state.json").read_text())
            web = state["web"]
            figures: dict[str, dict[str, dict]] = {}
            with multiprocessing.get_context("spawn").Pool(args.concurrency) as pool:
                for layout in ("monolith", "services"):
                    if layout == "services":
                        for service in SERVICES:
                            strangler("flip", "--service", service, "--to", service, "--plan", str(plan),
                                      "--etcd", state["etcd"], "--traefik-api", state["traefik_api"])
                    account = seed(web, args.seed)
                    figures[layout] = {
                        scenario: measure(pool, scenario, web, account, args.requests, args.concurrency,
                                          args.duration)
                        for scenario in ("tokens", "messages")}
        finally:
            strangler("down", "--run-dir", str(run_dir))
    report(figures, args)


def report(figures: dict[str, dict[str, dict]], args: argparse.Namespace) -> None:
    """Print one row per layout and scenario, then the services/monolith ratios."""
    print(f"through Traefik, {args.concurrency} client processes, up to {args.requests} requests or "
          f"{args.duration:g}s per scenario, {args.seed} messages seeded")
    print(f"{'scenario':<22}{'served by':<11}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}")
    names = {"tokens": "POST /api/tokens", "messages": "GET /api/messages"}
    for scenario, name in names.items():
        for layout in ("monolith", "services"):
            row = figures[layout][scenario]
            print(f"{name:<22}{layout:<11}{row['requests']:>9}{row['errors']:>8}"
                  f"{row['p50']:>9.1f}{row['p99']:>9.1f}")
    for scenario, name in names.items():
        mono, services = figures["monolith"][scenario], figures["services"][scenario]
        p50 = services["p50"] / mono["p50"] if mono["p50"] else float("nan")
        p99 = services["p99"] / mono["p99"] if mono["p99"] else float("nan")
        target = "  (target <= 1.5x: " + ("met" if p50 <= 1.5 else "NOT met") + ")" if scenario == "tokens" else ""
        print(f"{name}: services/monolith p50 {p50:.2f}x, p99 {p99:.2f}x{target}")


if __name__ == "__main__":
    main()
