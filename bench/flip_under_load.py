"""Failed requests while endpoints flip back and forth under a steady load through Traefik.

Starts the same world as ``flip_latency.py`` (its own etcd and Traefik on
free loopback ports, registered ``monolith`` and ``users`` stand-ins, a plan
of ``--endpoints`` endpoints, applied). Then ``--clients`` client processes,
each with its own ``requests.Session`` and a fixed request rate, send GETs
and POSTs through Traefik's web port: to the endpoints that flip (the
service's three: ``GET /api/users/<id>``, ``GET /api/users``, ``POST
/api/users``; the POST is not retried by Traefik) and to others that never
move (``GET`` and ``POST /api/messages``, a path only the catch-all matches).

Two phases with the same load: first no flips (the baseline), then
``--flips`` flips of the service's endpoints to ``users`` and back, each done
as ``strangler flip --service users`` does it and confirmed live through
Traefik's API. Every request is counted; a failure is a non-2xx answer or
a connection error. Each answer says which backend sent it, so the counts
show the flips took effect. The load is bounded (``--duration`` seconds at
most per phase), stays on 127.0.0.1, and every process started here is
stopped by its PID, also on failure or Ctrl-C.

    .venv/bin/python bench/flip_under_load.py
    .venv/bin/python bench/flip_under_load.py --flips 80 --clients 4 --rate 30 --endpoints 2000
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flip_latency import REPO, SERVICE, Platform, percentile, stop_on_sigterm  # noqa: E402

sys.path.insert(0, str(REPO))
from router.etcd import Etcd  # noqa: E402
from router.traefik import TraefikAPI  # noqa: E402
from strangler import routing  # noqa: E402

# (method, path, moves with the flips?)
LOAD = [
    ("GET", "/api/users/7", True),
    ("GET", "/api/messages", False),
    ("GET", "/api/users", True),
    ("POST", "/api/messages", False),
    ("POST", "/api/users", True),
    ("GET", "/not/in/the/plan", False),
]
MAX_DURATION = 30.0


def client(web: str, rate: float, limit: float, barrier: Any, stop: Any, results: Any) -> None:
    """One client process: send LOAD round-robin at ``rate`` req/s until ``stop`` (or ``limit`` s)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop, and stops us
    counts = {f"{m} {p}": {"sent": 0, "failed": 0, "backends": Counter()} for m, p, _ in LOAD}
    failures: list[str] = []
    latencies: list[float] = []
    interval = 1.0 / rate
    with requests.Session() as session:
        barrier.wait(timeout=60)
        start = time.monotonic()
        due, n = start, 0
        while not stop.is_set() and time.monotonic() - start < limit:
            method, path, _ = LOAD[n % len(LOAD)]
            n += 1
            tally = counts[f"{method} {path}"]
            tally["sent"] += 1
            began = time.perf_counter()
            try:
                answer = session.request(method, web + path, json={"n": n} if method == "POST" else None,
                                         timeout=5)
                latencies.append(time.perf_counter() - began)
                if answer.ok:
                    tally["backends"][answer.json().get("backend", "?")] += 1
                else:
                    tally["failed"] += 1
                    failures.append(f"{time.monotonic() - start:6.2f}s {method} {path}: {answer.status_code}")
            except (requests.RequestException, ValueError) as exc:
                tally["failed"] += 1
                failures.append(f"{time.monotonic() - start:6.2f}s {method} {path}: {exc.__class__.__name__}")
            due += interval
            now = time.monotonic()
            if due < now - interval:
                due = now  # fell behind: carry on at the rate, never burst to catch up
            time.sleep(max(0.0, due - now))
    results.put({"counts": counts, "failures": failures[:20], "latencies": latencies,
                 "seconds": time.monotonic() - start})


def run_load(platform: Platform, args: argparse.Namespace, action: Callable[[], Any]) -> tuple[dict, Any]:
    """Start the clients, run ``action`` while they send, stop them; merged counts and its result."""
    ctx = multiprocessing.get_context("spawn")
    barrier, stop, results = ctx.Barrier(args.clients + 1), ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=client, daemon=True,
                           args=(platform.web, args.rate, args.duration + 5, barrier, stop, results))
               for _ in range(args.clients)]
    try:
        for worker in workers:
            worker.start()
        barrier.wait(timeout=60)
        outcome = action()
        stop.set()
        parts = [results.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(timeout=10)
    finally:
        stop.set()
        for worker in workers:  # only ours, by their PIDs
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5)
    return merge(parts), outcome


def merge(parts: list[dict]) -> dict:
    """Add the clients' counts up."""
    merged: dict[str, Any] = {"counts": {}, "failures": [], "latencies": [], "seconds": 0.0}
    for part in parts:
        for name, tally in part["counts"].items():
            into = merged["counts"].setdefault(name, {"sent": 0, "failed": 0, "backends": Counter()})
            into["sent"] += tally["sent"]
            into["failed"] += tally["failed"]
            into["backends"].update(tally["backends"])
        merged["failures"] += part["failures"]
        merged["latencies"] += part["latencies"]
        merged["seconds"] = max(merged["seconds"], part["seconds"])
    return merged


def flipping(platform: Platform, args: argparse.Namespace) -> Callable[[], dict]:
    """The action of the second phase: flip the service's endpoints back and forth."""

    def run() -> dict:
        endpoints = routing.resolve(platform.plan, service=SERVICE)
        times: list[float] = []
        refused: list[str] = []
        deadline = time.monotonic() + args.duration - 1.0
        time.sleep(0.5)  # some load before the first flip
        for i in range(args.flips):
            if time.monotonic() > deadline:
                break
            target = SERVICE if i % 2 == 0 else "monolith"
            began = time.perf_counter()
            try:
                routing.flip(Etcd(platform.etcd_url), platform.plan, endpoints, target,
                             api=TraefikAPI(platform.api_url), timeout=10)
                times.append(time.perf_counter() - began)
            except routing.RoutingError as exc:
                refused.append(str(exc))
            time.sleep(args.pause)
        time.sleep(0.5)  # and some after the last one
        return {"times": times, "refused": refused, "tried": i + 1}

    return run


def summary_line(label: str, stats: dict, flips: str) -> str:
    """One phase as a table line."""
    sent = sum(t["sent"] for t in stats["counts"].values())
    failed = sum(t["failed"] for t in stats["counts"].values())
    ms = [s * 1000 for s in stats["latencies"]]
    rate = 100 * failed / sent if sent else 0.0
    return (f"{label:<22}{stats['seconds']:>7.1f}{sent:>9}{failed:>8}{rate:>9.3f}%"
            f"{sent / stats['seconds'] if stats['seconds'] else 0:>8.1f}"
            f"{percentile(ms, 0.5):>8.1f}{percentile(ms, 0.99):>8.1f}{flips:>7}")


def answers(stats: dict, moving: bool) -> str:
    """Which backends answered the endpoints that move (or those that do not)."""
    names = {f"{m} {p}" for m, p, flips in LOAD if flips == moving}
    total: Counter = Counter()
    for name in names:
        total.update(stats["counts"][name]["backends"])
    return ", ".join(f"{backend} {count}" for backend, count in total.most_common()) or "none"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flips", type=int, default=60, help="flips in the second phase (2..200)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (1..8)")
    parser.add_argument("--rate", type=float, default=25.0, help="requests per second per client (<= 100)")
    parser.add_argument("--baseline", type=float, default=6.0, help="seconds of load without flips")
    parser.add_argument("--duration", type=float, default=24.0,
                        help=f"at most this many seconds of flipping (<= {MAX_DURATION:g})")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between flips")
    parser.add_argument("--endpoints", type=int, default=15, help="endpoints in the table (3..5000)")
    parser.add_argument("--no-fsync", action="store_true",
                        help="run etcd with --unsafe-no-fsync (strangler up keeps fsync on)")
    args = parser.parse_args(argv)
    if not (2 <= args.flips <= 200 and 1 <= args.clients <= 8 and 0 < args.rate <= 100
            and 3 <= args.endpoints <= 5000):
        parser.error("--flips 2..200, --clients 1..8, --rate up to 100, --endpoints 3..5000")
    args.baseline = min(max(args.baseline, 1.0), MAX_DURATION)
    args.duration = min(max(args.duration, 2.0), MAX_DURATION)
    args.pause = min(max(args.pause, 0.0), 2.0)
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the baseline, then the flips, and print both."""
    args = parse_args(argv)
    stop_on_sigterm()
    print(f"flip under load: {args.clients} clients x {args.rate:g} req/s through Traefik's web port, "
          f"{args.endpoints} endpoints in the table; load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as tmp:
        platform = Platform(Path(tmp), args.endpoints, fsync=not args.no_fsync)
        try:
            baseline, _ = run_load(platform, args, lambda: time.sleep(args.baseline))
            during, flips = run_load(platform, args, flipping(platform, args))
            last = platform.served_by("/api/users/7")
        finally:
            platform.close()
    done = len(flips["times"])
    print(f"\n{'phase':<22}{'s':>7}{'requests':>9}{'failed':>8}{'rate':>10}{'req/s':>8}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'flips':>7}")
    print(summary_line("no flips (baseline)", baseline, "0"))
    print(summary_line("flipping", during, f"{done}"))
    print(f"\nanswers, endpoints that flip:  baseline {answers(baseline, True)}; "
          f"flipping {answers(during, True)}")
    print(f"answers, endpoints that stay:  baseline {answers(baseline, False)}; "
          f"flipping {answers(during, False)}")
    ms = [t * 1000 for t in flips["times"]]
    print(f"flips under load (command start to Traefik confirming): p50 {percentile(ms, 0.5):.0f} ms, "
          f"p99 {percentile(ms, 0.99):.0f} ms, max {max(ms, default=0):.0f} ms; "
          f"{len(flips['refused'])} refused; after the last one {last} answers GET /api/users/7")
    for line in flips["refused"][:3]:
        print(f"  refused: {line}")
    for stats, label in ((baseline, "baseline"), (during, "flipping")):
        for line in stats["failures"][:5]:
            print(f"  failed ({label}): {line}")
    failed = sum(t["failed"] for t in during["counts"].values())
    print(f"target: 0 failed requests during >= 50 flips: "
          f"{'met' if failed == 0 and done >= 50 else 'MISSED'} ({failed} failed, {done} flips)")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted; every process started here was stopped") from None
