"""Benchmark the monolith's JSON API under the production server.

Starts the documented gunicorn command on a free loopback port with a
temporary SQLite database (or a fresh PostgreSQL one, ``--engine
postgresql``), seeds messages through the API, then drives a bounded load
from separate worker processes (one `requests.Session` each) against the
**floor** (``GET /bench/floor/messages``: the same JSON bytes, precomputed,
from the same server; see bench/monolith_floor.py), `GET /api/messages` and
`POST /api/messages`, and prints requests/s, p50 and p99 latency and the
error count per scenario, and the API's req/s as a share of the floor's. The
server is stopped by its PID at the end, also on failure or Ctrl-C.

    .venv/bin/python bench/monolith_api.py --requests 2000 --concurrency 8 --duration 20
    .venv/bin/python bench/monolith_api.py --engine postgresql
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import requests

MAX_DURATION = 20.0
STARTUP_TIMEOUT = 40.0
# one client logging in per worker, many workers: lift the per-client limits on logging
# in and registering (the server started here inherits this environment)
for _name in ("RATE_LIMIT_LOGIN", "RATE_LIMIT_REGISTER"):
    os.environ.setdefault(_name, "100000 per minute")


class Result(NamedTuple):
    """What one worker process measured."""

    latencies_ms: list[float]
    errors: int
    started: float
    finished: float


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"


@contextlib.contextmanager
def database(engine: str, data_dir: Path) -> Iterator[str]:
    """A fresh database URL on *engine* (a PostgreSQL database is created, then dropped)."""
    if engine == "sqlite":
        yield f"sqlite:///{data_dir}/bench.sqlite"
        return
    import sqlalchemy

    name = "bench_" + secrets.token_hex(4)
    admin = sqlalchemy.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sqlalchemy.exc.OperationalError as exc:
        raise SystemExit(f"no PostgreSQL at {PG_SERVER}: {exc.orig}") from None
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def start_server(data_dir: Path, port: int, workers: int | None, url: str) -> subprocess.Popen:
    """Start the production command (plus the floor view) in its own process group; wait for /healthz."""
    env = dict(os.environ)
    env.pop("SOCKETIO_MESSAGE_QUEUE", None)
    env.update({
        "STRANGLER_DATA_DIR": str(data_dir),
        "DATABASE_URL": url,
        "SECRET_KEY": secrets.token_hex(16),
        "JWT_SECRET_KEY": secrets.token_hex(32),
    })
    cmd = [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:monolith.gunicorn_conf",
           "--pythonpath", str(Path(__file__).resolve().parent),
           "monolith_floor:app", "--bind", f"127.0.0.1:{port}"]
    if workers:
        cmd += ["--workers", str(workers)]
    log = (data_dir / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.2)
    stop_server(proc)
    tail = (data_dir / "server.log").read_text(errors="replace")[-2000:]
    raise SystemExit(f"the server did not become healthy; its log ends with:\n{tail}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server's process group (master and workers) by its id."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def seed(base: str, messages: int) -> str:
    """Register a user, post `messages` messages and return the user's token."""
    nickname, password = "bench" + secrets.token_hex(4), secrets.token_hex(8)
    with requests.Session() as session:
        session.post(f"{base}/api/users", json={"nickname": nickname, "password": password},
                     timeout=10).raise_for_status()
        answer = session.post(f"{base}/api/tokens", auth=(nickname, password), timeout=10)
        answer.raise_for_status()
        token = answer.json()["token"]
        for n in range(messages):
            session.post(f"{base}/api/messages", json={"source": f"seed message {n}, *hello*"},
                         headers={"Authorization": f"Bearer {token}"},
                         timeout=10).raise_for_status()
    return token


def run_worker(args: tuple[str, str, str, int, float]) -> Result:
    """Send up to `count` requests until `deadline` (epoch seconds); time each one."""
    method, url, token, count, deadline = args
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    started = time.time()
    with requests.Session() as session:
        for n in range(count):
            if time.time() >= deadline:
                break
            body = {"source": f"bench message {os.getpid()}-{n}"} if method == "POST" else None
            t0 = time.perf_counter()
            try:
                answer = session.request(method, url, json=body, headers=headers, timeout=10)
                ok = answer.status_code < 400
            except requests.RequestException:
                ok = False
            elapsed = (time.perf_counter() - t0) * 1000
            if ok:
                latencies.append(elapsed)
            else:
                errors += 1
    return Result(latencies, errors, started, time.time())


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def run_scenario(pool, method: str, url: str, token: str, total: int,
                 concurrency: int, duration: float) -> dict:
    """Split `total` requests over `concurrency` workers, bounded by `duration` seconds."""
    deadline = time.time() + duration
    shares = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]
    results = pool.map(run_worker, [(method, url, token, share, deadline) for share in shares])
    latencies = sorted(ms for r in results for ms in r.latencies_ms)
    errors = sum(r.errors for r in results)
    wall = max(r.finished for r in results) - min(r.started for r in results)
    done = len(latencies) + errors
    return {"requests": done, "errors": errors, "rps": done / wall if wall > 0 else 0.0,
            "p50": percentile(latencies, 0.50), "p99": percentile(latencies, 0.99)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per scenario")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent client processes")
    parser.add_argument("--duration", type=float, default=MAX_DURATION,
                        help=f"time limit per scenario in seconds (at most {MAX_DURATION:g})")
    parser.add_argument("--seed", type=int, default=200, help="messages posted before measuring")
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite",
                        help=f"the database: a temporary SQLite file, or a fresh database at {PG_SERVER}")
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn workers (default: monolith.gunicorn_conf's)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.duration <= 0:
        parser.error("--requests, --concurrency and --duration must be positive")
    args.duration = min(args.duration, MAX_DURATION)
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the scenarios against a fresh production server and print a table."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as tmp, \
            database(args.engine, Path(tmp)) as url:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start_server(Path(tmp), port, args.workers, url)
        try:
            token = seed(base, args.seed)
            same = same_bytes(base, token)
            print(f"server: gunicorn (monolith.gunicorn_conf) on {base}, {args.engine}, "
                  f"{args.seed} messages seeded; {args.concurrency} client processes, "
                  f"up to {args.requests} requests or {args.duration:g}s per scenario; "
                  f"load average {os.getloadavg()[0]:.2f}")
            print(f"the floor answers the same bytes as GET /api/messages: {'yes' if same else 'NO'}")
            print(f"{'scenario':<28}{'requests':>9}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
            scenarios = [("GET", "/bench/floor/messages", "GET floor (same bytes)"),
                         ("GET", "/api/messages", "GET /api/messages"),
                         ("POST", "/api/messages", "POST /api/messages")]
            results = {}
            with multiprocessing.get_context("spawn").Pool(args.concurrency) as pool:
                for method, path, label in scenarios:
                    stats = run_scenario(pool, method, base + path, token,
                                         args.requests, args.concurrency, args.duration)
                    results[label] = stats
                    print(f"{label:<28}{stats['requests']:>9}{stats['errors']:>8}"
                          f"{stats['rps']:>9.1f}{stats['p50']:>9.1f}{stats['p99']:>9.1f}")
            floor, api = results["GET floor (same bytes)"], results["GET /api/messages"]
            if floor["rps"]:
                print(f"GET /api/messages = {100 * api['rps'] / floor['rps']:.0f} % of the floor's req/s; "
                      f"p50 {api['p50'] / floor['p50']:.2f}x, p99 {api['p99'] / max(floor['p99'], 1e-9):.2f}x "
                      f"the floor's; p99/p50 {api['p99'] / max(api['p50'], 1e-9):.1f}")
            print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        finally:
            stop_server(proc)


def same_bytes(base: str, token: str) -> bool:
    """Whether the floor and the API answer the same body (both asked once, now)."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    with requests.Session() as session:
        floor = session.get(f"{base}/bench/floor/messages", headers=headers, timeout=10)
        api = session.get(f"{base}/api/messages", headers=headers, timeout=10)
    return floor.status_code == api.status_code == 200 and floor.content == api.content


if __name__ == "__main__":
    main()
