"""What shadowing costs users, and how much the comparator can compare before it drops.

Starts its own etcd and Traefik on free loopback ports, a monolith
stand-in and a candidate (each a gunicorn process serving a tiny WSGI app
with per-call noise), and the real comparator (gunicorn,
``strangler.shadow``), all registered in etcd; applies a small plan.

1. Latency on the primary path, same run: ``--requests`` GETs through
   Traefik's web port per mode at concurrency 1 and 16 (client processes,
   keep-alive sessions), modes interleaved; p50 and p99. Modes: ``off``;
   ``copy`` (Traefik mirrors, the comparator takes each copy but replays
   nothing: Traefik's and the comparator's own cost); ``on`` (each copy
   replayed: the monolith twice more, the candidate once, on the same
   CPUs); ``on 25%`` and ``on 10%`` (``strangler shadow --percent N``:
   Traefik copies that share of the requests, each replayed). The target is
   at most +0.3 ms p50 at concurrency 1.
2. Comparator throughput: paced load at rising rates with shadow on; per
   step the comparisons per second and how many copies were dropped. The
   highest rate with nothing dropped is the comparator's capacity here.

Bounded (every phase has a request count or a time limit), loopback only;
every process is stopped by its PID, also on failure or Ctrl-C.

    .venv/bin/python bench/shadow_overhead.py
    .venv/bin/python bench/shadow_overhead.py --requests 3000 --rates 100,200,400,800
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from router import table  # noqa: E402
from router.etcd import Etcd  # noqa: E402
from router.keys import parse_endpoint  # noqa: E402
from router.traefik import TraefikAPI, seed_root_key, static_config, write_static_config  # noqa: E402
from strangler.plan import load_plan  # noqa: E402
from strangler.routing import apply as routing_plan  # noqa: E402
from strangler.shadow import control  # noqa: E402
from strangler.shadow.store import read_report  # noqa: E402
from strangler.stack import procs  # noqa: E402

ENDPOINT = "GET /api/users/<id>"
PATH = "/api/users/7"
TINY = '''
import json, secrets, time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    body = json.dumps({"id": 7, "nickname": "susan", "seen": time.time(),
                       "token": secrets.token_hex(8)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''
PLAN = f'''
[strangler]
strategy = "incremental"
[stack]
web_port = 0
dashboard_port = 0
etcd_port = 0
etcd_peer_port = 0
redis_port = 0
[backends.monolith]
command = "unused {{port}}"
health = "/healthz"
app = "monolith:create_app"
[backends.users]
command = "unused {{port}}"
health = "/healthz"
endpoints = ["{ENDPOINT}"]
[backends.comparator]
command = "unused {{port}}"
health = "/healthz"
[[endpoints]]
endpoint = "{ENDPOINT}"
name = "api.get_user"
'''
GUNICORN = str(Path(sys.executable).parent / "gunicorn")


def start_gunicorn(stack: ExitStack, workdir: Path, name: str, app: str, etcd_url: str, **env: str) -> str:
    """One registered gunicorn backend; returns its URL (stopped by PID when ``stack`` closes)."""
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"STRANGLER_ETCD": etcd_url, "STRANGLER_BACKEND": name, "STRANGLER_INSTANCE_URL": url,
           "PYTHONPATH": f"{workdir}:{REPO}", **env}
    proc = procs.Proc(name, [GUNICORN, "-c", "python:strangler.shadow.gunicorn_conf", "--bind",
                             f"127.0.0.1:{port}", app], workdir / f"{name}.log", env=env, cwd=str(workdir),
                      url=url).start()
    stack.callback(proc.stop)
    procs.wait_until(lambda: procs.http_ok(url + "/healthz"), 30, name, proc=proc)
    return url


def start_world(stack: ExitStack, workdir: Path) -> dict:
    """etcd, Traefik, monolith, candidate and comparator; the plan applied."""
    etcd_proc = procs.start_etcd(workdir / "etcd", procs.free_port(), procs.free_port(), unsafe_no_fsync=True)
    stack.callback(etcd_proc.stop)
    etcd = Etcd.connect(etcd_proc.url, wait=10)
    web_port, api_port = procs.free_port(), procs.free_port()
    config = write_static_config(workdir / "traefik.yml", static_config(
        web_port=web_port, api_port=api_port, etcd_endpoints=[etcd_proc.url], internal_port=procs.free_port()))
    seed_root_key(etcd)
    traefik = procs.start_traefik(config)
    stack.callback(traefik.stop)
    (workdir / "tiny.py").write_text(TINY)
    for name in ("monolith", "users"):  # the comparator's config file works for any tiny app
        start_gunicorn(stack, workdir, name, "tiny:app", etcd_proc.url, STRANGLER_THREADS="32")
    plan_path = workdir / "strangler.toml"
    plan_path.write_text(PLAN)
    start_gunicorn(stack, workdir, "comparator", "strangler.shadow.wsgi:app", etcd_proc.url,
                   STRANGLER_PLAN=str(plan_path), STRANGLER_RUN_DIR=str(workdir))
    plan = load_plan(plan_path)
    api = TraefikAPI(traefik.url, timeout=5)
    routing_plan.apply_plan(etcd, plan, api=api, timeout=30)
    return {"etcd": etcd, "plan": plan, "api": api, "web": f"http://127.0.0.1:{web_port}", "dir": workdir}


def client(args: tuple[str, int]) -> list[float]:
    """One client process: ``n`` sequential GETs on a keep-alive session; latencies in seconds."""
    url, n = args
    session = requests.Session()
    session.get(url, timeout=5)  # connect first: measure requests, not the handshake
    out = []
    for _ in range(n):
        began = time.perf_counter()
        response = session.get(url, timeout=5)
        out.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
    return out


def pct(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def latency(pool: Any, world: dict, concurrency: int, total: int) -> list[float]:
    share = max(1, total // concurrency)
    results = pool.map(client, [(world["web"] + PATH, share)] * concurrency)
    return [v for r in results for v in r]


def set_shadow(world: dict, mode: str) -> None:
    """``off``; ``copy``: mirrored, but the comparator replays nothing (its candidate is unknown,
    so each copy ends as an error at once); ``on``: mirrored and compared; ``on 25%``: Traefik
    copies a quarter of the requests (``strangler shadow --percent 25``), each compared."""
    endpoint = parse_endpoint(ENDPOINT)
    routes, _ = table.load(world["etcd"])
    if mode == "off":
        if routes[endpoint].mirror:
            control.shadow_off(world["etcd"], world["plan"], [endpoint], api=world["api"])
        return
    percent = int(mode.split()[1].rstrip("%")) if " " in mode else 100
    if not routes[endpoint].mirror or routes[endpoint].mirror_percent != percent:
        control.shadow_on(world["etcd"], world["plan"], [endpoint], "users", api=world["api"], percent=percent)
    # "copy": a candidate with no instances, so the comparator replays nothing
    candidate = "nobody" if mode == "copy" else "users"
    table.apply(world["etcd"], lambda rs: {**rs, endpoint: replace(rs[endpoint], candidate=candidate)},
                who="bench", what=f"shadow candidate {candidate}")
    time.sleep(1.5)  # the comparator reads the route table every second


def totals(world: dict) -> dict:
    time.sleep(0.7)  # the comparator flushes every 0.5 s
    found = read_report(world["dir"] / "shadow.sqlite", ENDPOINT)
    return found[0] if found else {"compared": 0, "dropped": 0, "seen": 0}


def throughput(world: dict, rate: int, seconds: float) -> tuple[float, int, int]:
    """Paced GETs at ``rate``/s for ``seconds``; returns (comparisons/s, dropped, user failures)."""
    before = totals(world)
    failures = []
    threads = 8
    stop_at = time.monotonic() + seconds

    def pace() -> None:
        session, gap = requests.Session(), threads / rate
        next_at = time.monotonic()
        while time.monotonic() < stop_at:
            if session.get(world["web"] + PATH, timeout=5).status_code != 200:
                failures.append(1)
            next_at += gap
            time.sleep(max(0.0, next_at - time.monotonic()))

    began = time.monotonic()
    workers = [threading.Thread(target=pace) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    deadline = time.monotonic() + 30  # let the queue drain, bounded
    comparator = _comparator_url(world)
    while time.monotonic() < deadline and requests.get(comparator + "/healthz", timeout=5).json()["queued"]:
        time.sleep(0.1)
    after = totals(world)
    elapsed = time.monotonic() - began
    return (after["compared"] - before["compared"]) / elapsed, after["dropped"] - before["dropped"], len(failures)


def _comparator_url(world: dict) -> str:
    from router import registry

    return registry.instances(world["etcd"], "comparator")[0].url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per latency phase")
    parser.add_argument("--rates", default="100,200,400,800", help="req/s steps for the throughput ramp")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per throughput step (max 20)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp, ExitStack() as stack:
        world = start_world(stack, Path(tmp))
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(16))
        print(f"latency through Traefik, {args.requests} GETs per phase (ms)")
        print(f"{'concurrency':>11} {'shadow':>7} {'p50':>7} {'p99':>7} {'p50 added':>9}")
        modes = ("off", "copy", "on", "on 25%", "on 10%")
        for concurrency in (1, 16):
            latency(pool, world, concurrency, 200)  # warm up
            results: dict[str, list[float]] = {mode: [] for mode in modes}
            for mode in modes * 2:  # interleaved: drift hits every mode alike
                set_shadow(world, mode)
                results[mode] += latency(pool, world, concurrency, args.requests // 2)
            base = pct(results["off"], .5)
            for mode in modes:
                values = results[mode]
                added = "" if mode == "off" else f"{pct(values, .5) - base:+9.3f}"
                print(f"{concurrency:>11} {mode:>7} {pct(values, .5):7.3f} {pct(values, .99):7.3f} {added}")
        print("target: on adds <= +0.300 ms p50 at concurrency 1; copy = mirrored, nothing replayed;")
        print("on N% = strangler shadow --percent N: Traefik copies N % of the requests")
        set_shadow(world, "on")
        print(f"\ncomparator throughput (shadow on, {args.seconds:g}s per step)")
        print(f"{'rate/s':>7} {'compared/s':>10} {'dropped':>8} {'user failures':>13}")
        for rate in [int(r) for r in args.rates.split(",")]:
            per_s, dropped, failed = throughput(world, rate, min(args.seconds, 20.0))
            print(f"{rate:>7} {per_s:10.0f} {dropped:>8} {failed:>13}")


if __name__ == "__main__":
    main()
