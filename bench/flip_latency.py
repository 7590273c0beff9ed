"""How long a flip takes, from the command's start until Traefik's API shows it live.

For each table size (``--endpoints``, default 15 and 2000) it starts its own
etcd (``--max-txn-ops`` 20000, as ``strangler up`` does) and Traefik on free
loopback ports in a temporary directory, two tiny HTTP backends registered in
etcd like real instances (``monolith`` and the service ``users``), writes a
plan with that many endpoints (the Flack ones, then synthetic ones) and
applies it. Then it flips ``GET /api/users/<id>`` to ``users`` and back,
``--flips`` times, and prints p50 / p99 / max against the targets, two ways:

1. in-process, through ``strangler.routing.flip`` — what ``strangler flip``
   calls: the strategy checks, the health check of the target's registered
   instances, Traefik's API check, the one etcd transaction, and the wait
   until Traefik's API shows the new routing (``wait_live``);
2. the real command, ``strangler flip ... --to ...``, as a subprocess
   (``--cli-flips`` runs), next to the bare interpreter start
   (``python -c "import strangler.cli, strangler.routing.cli"``, and
   ``python -c pass``) measured in the same run, so the reader sees which
   part is the flip and which is Python starting and importing the CLI.

Before both, the **limit** in the same run: one raw etcd put of the flipped
router's service key until Traefik's API shows it (nothing of the toolkit
involved), so the figures read "flip = N x the limit". The table grows to its
size in steps of 500 endpoints (one transaction of 2000 endpoints' keys is
above etcd's default request size); ``--throttle`` sets Traefik's
``providersThrottleDuration``.

After each flip one request through Traefik's web port checks that the new
backend answers. Every process is stopped by its PID, also on failure or
Ctrl-C; all traffic stays on 127.0.0.1.

    .venv/bin/python bench/flip_latency.py
    .venv/bin/python bench/flip_latency.py --flips 40 --endpoints 15 500 2000 --cli-flips 6
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from router.etcd import Etcd  # noqa: E402
from router.registry import Registration  # noqa: E402
from router.traefik import TraefikAPI, seed_root_key, static_config, write_static_config  # noqa: E402
from strangler import routing  # noqa: E402
from strangler.plan import Plan, load_plan  # noqa: E402
from strangler.routing import apply as routing_plan  # noqa: E402
from strangler.stack import procs  # noqa: E402

SERVICE = "users"
FLIPPED = "GET /api/users/<id>"
# The service owns these (flip_under_load moves them all at once); the rest stay on the monolith.
SERVICE_ENDPOINTS = [FLIPPED, "GET /api/users", "POST /api/users"]
FLACK = [
    "GET /", "GET /healthz", "GET /api/messages", "POST /api/messages", "GET /api/messages/<id>",
    "PUT /api/messages/<id>", "POST /api/tokens", "DELETE /api/tokens", "PUT /api/users/<id>",
    "GET /api/users/<id>/messages", "DELETE /api/messages/<id>", "GET /api/stats",
]
SYNTHETIC_METHODS = ("GET", "POST", "PUT", "DELETE")
TARGETS_MS = {"p50": 150.0, "p99": 300.0}
TARGET_P99_LARGE_MS = 500.0  # with 2000 endpoints
STRANGLER = str(Path(sys.executable).parent / "strangler")
APPLY_STEP = 500
# The limit: a raw put of the flipped router's service key until Traefik's API shows it.
LIMIT_KEY = "traefik/http/routers/get-api-users-id/service"
LIMIT_ROUTER = "get-api-users-id@etcd"


# -- the world the flips run in -------------------------------------------------------------------


class TinyBackend(ThreadingHTTPServer):
    """Answers every method and path with ``{"backend": name}`` (HTTP/1.1 keep-alive)."""

    daemon_threads = True
    request_queue_size = 256  # the default 5 would drop connections under load, not flips

    def __init__(self, name: str) -> None:
        self.name = name
        body = json.dumps({"backend": name}).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_POST = do_PUT = do_DELETE = do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request: object, client_address: object) -> None:
        """Keep quiet when a client (Traefik) drops an idle keep-alive connection."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()


def endpoint_specs(count: int) -> list[str]:
    """``count`` distinct endpoints: the service's, Flack's, then synthetic ones."""
    specs = (SERVICE_ENDPOINTS + FLACK)[:count]
    n = 0
    while len(specs) < count:
        method = SYNTHETIC_METHODS[n % len(SYNTHETIC_METHODS)]
        specs.append(f"{method} /api/bench/r{n // len(SYNTHETIC_METHODS)}/<id>")
        n += 1
    return specs


def plan_text(count: int) -> str:
    """An incremental plan: ``count`` monolith endpoints, the first ones owned by ``users``."""
    specs = endpoint_specs(max(count, len(SERVICE_ENDPOINTS)))
    owned = [s for s in specs if s in SERVICE_ENDPOINTS]
    lines = [
        '[strangler]\nstrategy = "incremental"',
        "[stack]\nweb_port = 0\ndashboard_port = 0\netcd_port = 0\netcd_peer_port = 0\nredis_port = 0",
        '[backends.monolith]\ncommand = "not-started {port}"\nhealth = "/healthz"\napp = "monolith:create_app"',
        f'[backends.{SERVICE}]\ncommand = "not-started {{port}}"\nhealth = "/healthz"',
        f"endpoints = {json.dumps(owned)}",
    ]
    lines += [f'[[endpoints]]\nendpoint = "{spec}"' for spec in specs]
    return "\n".join(lines) + "\n"


class Platform:
    """etcd, Traefik and the two registered backends for one table size; ``close()`` stops all."""

    def __init__(self, workdir: Path, endpoints: int, fsync: bool = True, throttle: str = "50ms") -> None:
        self.stack = ExitStack()
        try:
            self._start(workdir, endpoints, fsync, throttle)
        except BaseException:
            self.close()
            raise

    def _start(self, workdir: Path, endpoints: int, fsync: bool, throttle: str) -> None:
        etcd_proc = procs.start_etcd(workdir / "etcd", procs.free_port(), procs.free_port(),
                                     max_txn_ops=20000, unsafe_no_fsync=not fsync)
        self.stack.callback(etcd_proc.stop)
        self.etcd_url = etcd_proc.url
        self.etcd = Etcd.connect(etcd_proc.url, wait=10)
        web_port, api_port = procs.free_port(), procs.free_port()
        config = write_static_config(workdir / "traefik.yml", static_config(
            web_port=web_port, api_port=api_port, etcd_endpoints=[etcd_proc.url],
            access_log_path=str(workdir / "access.log"), internal_port=procs.free_port(),
            throttle=throttle))
        seed_root_key(self.etcd)
        traefik = procs.start_traefik(config)
        self.stack.callback(traefik.stop)
        self.web = f"http://127.0.0.1:{web_port}"
        self.api_url = traefik.url
        self.api = TraefikAPI(traefik.url, timeout=5)
        for name in ("monolith", SERVICE):
            server = TinyBackend(name)
            self.stack.callback(server.stop)
            registration = Registration(self.etcd, name, server.url, ttl=10).start()
            self.stack.callback(registration.stop)
        self.plan_path = workdir / "strangler.toml"
        began = time.monotonic()
        # The table grows in steps of APPLY_STEP endpoints: one transaction adding
        # 2000 endpoints' keys at once is larger than etcd's default request limit
        # (1.5 MiB), which a flip never comes near.
        for size in [*range(APPLY_STEP, endpoints, APPLY_STEP), endpoints]:
            self.plan_path.write_text(plan_text(size))
            self.plan = load_plan(self.plan_path)
            routing_plan.apply_plan(self.etcd, self.plan, api=self.api, timeout=120)
        self.apply_s = time.monotonic() - began

    def served_by(self, path: str, method: str = "GET") -> str:
        """Which backend answers ``method path`` through Traefik now (raises on non-2xx)."""
        response = requests.request(method, self.web + path, timeout=5)
        response.raise_for_status()
        return response.json()["backend"]

    def close(self) -> None:
        """Deregister and stop the backends, then Traefik, then etcd (each by its PID)."""
        self.stack.close()


# -- measuring ------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0.0 for no values)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def target_for(count: int) -> dict[str, float]:
    """The targets in ms for a table of ``count`` endpoints."""
    return {**TARGETS_MS, "p99": TARGET_P99_LARGE_MS if count >= 2000 else TARGETS_MS["p99"]}


def flip_once(platform: Platform, plan: Plan, target: str, timeout: float = 10.0) -> routing.Outcome:
    """One flip of FLIPPED to ``target`` as ``strangler flip`` does it (fresh clients, as a new command)."""
    etcd, api = Etcd(platform.etcd_url), TraefikAPI(platform.api_url)
    chosen = routing.resolve(plan, [FLIPPED])
    return routing.flip(etcd, plan, chosen, target, api=api, timeout=timeout)


def in_process(platform: Platform, flips: int, pause: float) -> dict[str, list[float]]:
    """Flip back and forth ``flips`` times; seconds per flip and per phase."""
    times: dict[str, list[float]] = {"total": [], "checks": [], "write": [], "live": []}
    wrong = 0
    for i in range(flips):
        target = SERVICE if i % 2 == 0 else "monolith"
        began = time.perf_counter()
        outcome = flip_once(platform, platform.plan, target)
        total = time.perf_counter() - began
        times["total"].append(total)
        times["write"].append(outcome.write_s)
        times["live"].append(outcome.live_s or 0.0)
        times["checks"].append(total - outcome.write_s - (outcome.live_s or 0.0))
        wrong += platform.served_by("/api/users/7") != target
        time.sleep(pause)
    if wrong:
        print(f"  !! {wrong} flips confirmed live, yet the next request was answered by the old backend")
    return times


def timed_run(argv: list[str]) -> tuple[float, str]:
    """Run ``argv`` to its end (60 s at most); wall seconds and stdout. Raises on failure."""
    began = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed: {(result.stderr or result.stdout).strip()}")
    return seconds, result.stdout


def by_cli(platform: Platform, runs: int, pause: float) -> dict[str, list[float]]:
    """``strangler flip`` as a subprocess ``runs`` times, each next to a bare interpreter start."""
    times: dict[str, list[float]] = {"command": [], "python start": [], "bare python": [], "inside": []}
    conn = ["--plan", str(platform.plan_path), "--etcd", platform.etcd_url,
            "--traefik-api", platform.api_url]
    for i in range(runs):
        target = SERVICE if i % 2 == 0 else "monolith"
        seconds, _ = timed_run([sys.executable, "-c", "pass"])
        times["bare python"].append(seconds)
        seconds, _ = timed_run([sys.executable, "-c", "import strangler.cli, strangler.routing.cli"])
        times["python start"].append(seconds)
        seconds, out = timed_run([STRANGLER, "flip", FLIPPED, "--to", target, *conn])
        times["command"].append(seconds)
        # The command's own figure: from after its plan is read to Traefik confirming.
        found = re.search(r"(\d+) ms after the command started", out)
        times["inside"].append(int(found.group(1)) / 1000 if found else float("nan"))
        if platform.served_by("/api/users/7") != target:
            print(f"  !! strangler flip --to {target} returned, yet the old backend still answers")
        time.sleep(pause)
    return times


def limit(platform: Platform, runs: int, pause: float, interval: float = 0.01) -> list[float]:
    """Seconds from ONE raw etcd put (the flipped router's service key) until Traefik's API shows it.

    Nothing of the toolkit is involved: no checks, no table, no history;
    Traefik's API is polled for that one router every ``interval``. It is
    what any flip must wait for at least, at this table size, on this machine
    now. Puts go in pairs (users, then monolith), leaving the keys as the
    route table has them.
    """
    times = []
    for i in range(runs):
        service = SERVICE if i % 2 == 0 else "monolith"
        began = time.perf_counter()
        platform.etcd.put(LIMIT_KEY, service)
        while True:
            router = platform.api._get(f"/api/http/routers/{LIMIT_ROUTER}") or {}
            if router.get("service") == service:
                break
            if time.perf_counter() - began > 30:
                raise SystemExit(f"Traefik did not show the raw put of {LIMIT_KEY} within 30 s")
            time.sleep(interval)
        times.append(time.perf_counter() - began)
        time.sleep(pause)
    if runs % 2:
        platform.etcd.put(LIMIT_KEY, "monolith")
    return times


def reference(platform: Platform, n: int = 20) -> dict[str, float]:
    """Median ms of a bare etcd read and a bare Traefik API call: how busy the machine is now."""
    etcd, api = Etcd(platform.etcd_url), TraefikAPI(platform.api_url)
    out = {}
    for name, call in (("etcd read", etcd.revision), ("Traefik /api/overview", api.overview),
                       ("Traefik routers+services", lambda: (api.routers(), api.services()))):
        samples = []
        for _ in range(n):
            began = time.perf_counter()
            call()
            samples.append(time.perf_counter() - began)
        out[name] = statistics.median(samples) * 1000
    return out


def row(label: str, values: list[float], targets: dict[str, float] | None = None) -> str:
    """One table line: n, p50, p99, max in ms, and the targets with a verdict."""
    ms = [v * 1000 for v in values]
    p50, p99 = percentile(ms, 0.50), percentile(ms, 0.99)
    line = f"  {label:<40}{len(ms):>4}{p50:>9.0f}{p99:>9.0f}{max(ms):>9.0f}"
    if targets:
        ok = p50 <= targets["p50"] and p99 <= targets["p99"]
        line += f"   p50 <= {targets['p50']:.0f}, p99 <= {targets['p99']:.0f}: {'met' if ok else 'MISSED'}"
    return line


def bench_size(workdir: Path, count: int, args: argparse.Namespace) -> None:
    """Everything for one table size: start, measure, print, stop."""
    platform = Platform(workdir, count, fsync=not args.no_fsync, throttle=args.throttle)
    try:
        plan_s = []
        for _ in range(3):
            began = time.perf_counter()
            load_plan(platform.plan_path)
            plan_s.append(time.perf_counter() - began)
        print(f"\n== {count} endpoints (plan apply {platform.apply_s:.2f} s; "
              f"reading the plan file {statistics.median(plan_s) * 1000:.0f} ms, "
              "paid by the command, not in the in-process figures)")
        ref = reference(platform)
        print("  machine now: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ref.items()))
        flip_once(platform, platform.plan, SERVICE)  # warm-up, not counted
        flip_once(platform, platform.plan, "monolith")
        print(f"  {'':<40}{'n':>4}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        limit_s = limit(platform, args.flips + args.flips % 2, args.pause)
        print(row("limit: raw etcd put -> Traefik's API", limit_s))
        times = in_process(platform, args.flips, args.pause)
        print(row("in-process flip (routing.flip)", times["total"], target_for(count)))
        print(row("  checks (plan, health, Traefik)", times["checks"]))
        print(row("  etcd transaction (read+write)", times["write"]))
        print(row("  until Traefik's API shows it", times["live"]))
        if args.cli_flips:
            cli = by_cli(platform, args.cli_flips, args.pause)
            print(row("strangler flip (subprocess)", cli["command"]))
            print(row("  python -c 'import <the flip's modules>'", cli["python start"]))
            print(row("  python -c 'pass'", cli["bare python"]))
            print(row("  its own 'after the command started'", cli["inside"], target_for(count)))
            command, start = (statistics.median(cli[k]) * 1000 for k in ("command", "python start"))
            bare = statistics.median(cli["bare python"]) * 1000
            print(f"  medians: the command {command:.0f} ms = interpreter {bare:.0f} ms + importing "
                  f"the flip's modules {start - bare:.0f} ms + the rest {command - start:.0f} ms "
                  f"(plan file, clients, the flip; differences of medians, noisy on a busy machine); "
                  f"{command / start:.2f}x the import alone")
        limit_p50 = statistics.median(limit_s) * 1000
        flip_p50 = statistics.median(times["total"]) * 1000
        print(f"  p50: in-process flip = {flip_p50 / limit_p50:.2f} x the limit ({limit_p50:.0f} ms)"
              + (f"; strangler flip (subprocess) = {command / limit_p50:.2f} x the limit"
                 if args.cli_flips else ""))
    finally:
        platform.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flips", type=int, default=30, help="in-process flips per size (>= 2)")
    parser.add_argument("--cli-flips", type=int, default=10, help="subprocess runs per size (0: none)")
    parser.add_argument("--endpoints", type=int, nargs="+", default=[15, 2000],
                        help="table sizes to measure (each 3..5000)")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between flips")
    parser.add_argument("--throttle", default="50ms",
                        help="Traefik's providersThrottleDuration (the toolkit's default: 50ms)")
    parser.add_argument("--no-fsync", action="store_true",
                        help="run etcd with --unsafe-no-fsync (strangler up keeps fsync on)")
    args = parser.parse_args(argv)
    if not 2 <= args.flips <= 500 or not 0 <= args.cli_flips <= 50:
        parser.error("--flips must be 2..500 and --cli-flips 0..50")
    if any(not 3 <= n <= 5000 for n in args.endpoints):
        parser.error("--endpoints must each be 3..5000")
    args.pause = min(max(args.pause, 0.0), 2.0)
    return args


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the clean-up in ``finally`` blocks still runs."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def main(argv: list[str] | None = None) -> None:
    """Measure every requested table size and print the tables."""
    args = parse_args(argv)
    stop_on_sigterm()
    print(f"flip latency: {args.flips} in-process flips and {args.cli_flips} CLI runs per size, "
          f"{args.pause:g} s apart; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"etcd fsync {'off' if args.no_fsync else 'on'}; Traefik throttle {args.throttle}")
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as tmp:
        for count in args.endpoints:
            bench_size(Path(tmp) / f"n{count}", count, args)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted; every process started here was stopped") from None
