"""How fast `strangler promote` rolls a candidate back once it turns bad, and how many users saw it.

Starts its own etcd and Traefik on free loopback ports, a registered monolith
and candidate (``users``) in threads, a plan whose ``GET /api/users/<id>``
the candidate may take, and the promotion controller (in this process, as
``strangler controller`` runs it). Each run:

1. puts the table back on the monolith and starts a steady load through
   Traefik's web port (``--rate`` requests per second, bounded in time);
2. starts ``strangler promote --steps W,100 --interval I --detach``;
3. once step W is being watched, waits a random part of the interval and
   makes the candidate answer 500 to everything (the fault);
4. records when the controller has the rollback confirmed live through
   Traefik's API, and counts the user requests answered 500.

Printed per run and as medians: time from the fault to the rollback being
live, against the target of one interval + 2 s, and the requests that saw
the fault, against weight x rate x that time (the exposure a perfect
splitter would give). Everything is stopped by PID, also on failure or Ctrl-C.

    .venv/bin/python bench/promote.py
    .venv/bin/python bench/promote.py --runs 5 --interval 2 --weight 10 --rate 80
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from click.testing import CliRunner  # noqa: E402
from flip_latency import plan_text  # noqa: E402

from router import table  # noqa: E402
from router.etcd import Etcd  # noqa: E402
from router.registry import Registration  # noqa: E402
from router.traefik import TraefikAPI, seed_root_key, static_config, write_static_config  # noqa: E402
from strangler.cli import cli  # noqa: E402
from strangler.plan import load_plan  # noqa: E402
from strangler.promote import records  # noqa: E402
from strangler.promote.controller import Controller  # noqa: E402
from strangler.routing import apply as routing_plan  # noqa: E402
from strangler.stack import procs  # noqa: E402

ENDPOINT = "GET /api/users/<id>"
MAX_LOAD_SECONDS = 120.0


class Backend(ThreadingHTTPServer):
    """Answers ``{"backend": name}``; with ``faulty`` set, 500 to everything but /healthz."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, name: str) -> None:
        self.faulty = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without this, Nagle and delayed ACKs add
            # ~40-200 ms to some answers, and latency is what these backends are judged on
            disable_nagle_algorithm = True

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status = 500 if server.faulty and self.path != "/healthz" else 200
                body = f'{{"backend": "{name}"}}'.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def handle_error(self, request: object, client_address: object) -> None:
        """Keep quiet when Traefik drops an idle keep-alive connection."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Load:
    """``rate`` GETs per second through Traefik from 4 threads; records (time, status)."""

    def __init__(self, web: str, rate: float) -> None:
        self.url, self.gap = f"{web}/api/users/7", 4 / rate
        self.answers: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._send, daemon=True) for _ in range(4)]
        self.until = time.monotonic() + MAX_LOAD_SECONDS

    def _send(self) -> None:
        with requests.Session() as session:
            next_at = time.monotonic()
            while not self.stop.is_set() and time.monotonic() < self.until:
                try:
                    status = session.get(self.url, timeout=5).status_code
                except requests.RequestException:
                    status = 0
                self.answers.append((time.monotonic(), status))
                next_at += self.gap
                self.stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def one_run(world: dict, args: argparse.Namespace) -> dict[str, float]:
    """One promotion with a fault injected in its first step; the figures."""
    etcd, candidate = world["etcd"], world["candidate"]
    candidate.faulty = False
    routing_plan.apply_plan(etcd, world["plan"], moves="move", api=world["api"])
    connection = ["--plan", str(world["plan_path"]), "--etcd", world["etcd_url"], "--traefik-api", world["api_url"]]
    with Load(world["web"], args.rate) as load:
        time.sleep(0.5)
        result = CliRunner().invoke(cli, ["promote", ENDPOINT, "--to", "users", "--steps", f"{args.weight},100",
                                          "--interval", f"{args.interval}s", "--min-requests", "5",
                                          "--detach", *connection])
        if result.exit_code != 0:
            raise SystemExit(f"promote refused: {result.output.strip()}")
        promotion_id = records.all_promotions(etcd)[-1].id
        procs.wait_until(lambda: records.get(etcd, promotion_id)[0].phase == "watch", 30, "the first step")
        time.sleep(random.uniform(0.1, 0.9) * args.interval)  # noqa: S311 - where in the interval
        fault_wall, fault = time.time(), time.monotonic()
        candidate.faulty = True
        procs.wait_until(lambda: records.get(etcd, promotion_id)[0].state in records.ENDED,
                         args.interval * 4 + 20, "the rollback")
        promotion = records.get(etcd, promotion_id)[0]
        time.sleep(0.3)
    if promotion.state != records.ROLLED_BACK:
        raise SystemExit(f"promotion {promotion_id} ended {promotion.state}, not rolled back")
    live = promotion.ended - fault_wall  # `ended` is written once Traefik confirmed the rollback
    faulty = [t for t, status in load.answers if t >= fault and status >= 500]
    # the users' rate while the fault lasted (every answer, both sides)
    rate = sum(1 for t, _ in load.answers if fault <= t < fault + live) / live
    last = (max(faulty) - fault) if faulty else 0.0
    return {"live_s": live, "saw": len(faulty), "bound": args.weight / 100 * rate * live, "rate": rate,
            "last_s": last}


def start_world(workdir: Path, stack: list) -> dict:
    """etcd, Traefik, the two backends and the controller; ``stack`` collects what to stop."""
    etcd_proc = procs.start_etcd(workdir / "etcd", procs.free_port(), procs.free_port(), unsafe_no_fsync=True)
    stack.append(etcd_proc.stop)
    etcd = Etcd.connect(etcd_proc.url, wait=10)
    web_port, api_port = procs.free_port(), procs.free_port()
    config = write_static_config(workdir / "traefik.yml", static_config(
        web_port=web_port, api_port=api_port, etcd_endpoints=[etcd_proc.url], internal_port=procs.free_port()))
    seed_root_key(etcd)
    traefik = procs.start_traefik(config)
    stack.append(traefik.stop)
    backends = {name: Backend(name) for name in ("monolith", "users")}
    for backend in backends.values():
        stack.append(backend.shutdown)
    for name, backend in backends.items():
        registration = Registration(etcd, name, backend.url, ttl=10).start()
        stack.append(registration.stop)
    plan_path = workdir / "strangler.toml"
    plan_path.write_text(plan_text(3))
    plan = load_plan(plan_path)
    api = TraefikAPI(traefik.url, timeout=5)
    routing_plan.apply_plan(etcd, plan, api=api)
    stop = threading.Event()
    controller = Controller(Etcd(etcd_proc.url), [traefik.url], workdir / "shadow.sqlite", tick=0.1)
    thread = threading.Thread(target=controller.run, args=(stop,), daemon=True)
    thread.start()
    stack.append(lambda: (stop.set(), thread.join(10)))
    procs.wait_until(lambda: records.controller_alive(etcd) is not None, 10, "the controller")
    return {"etcd": etcd, "etcd_url": etcd_proc.url, "api": api, "api_url": traefik.url, "plan": plan,
            "plan_path": plan_path, "web": f"http://127.0.0.1:{web_port}", "candidate": backends["users"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, choices=range(1, 21), metavar="1-20")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds per step (0.5-30)")
    parser.add_argument("--weight", type=int, default=10, choices=range(1, 100), metavar="1-99")
    parser.add_argument("--rate", type=float, default=80.0, help="user requests per second (1-400)")
    args = parser.parse_args(argv)
    if not 0.5 <= args.interval <= 30 or not 1 <= args.rate <= 400:
        parser.error("--interval must be 0.5-30 and --rate 1-400")
    stack: list = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            world = start_world(Path(tmp), stack)
            figures = []
            for n in range(args.runs):
                run = one_run(world, args)
                figures.append(run)
                print(f"run {n + 1}: fault -> rollback live {run['live_s']:.2f} s "
                      f"(target <= {args.interval + 2:.1f} s, ratio {run['live_s'] / (args.interval + 2):.2f}); "
                      f"{run['saw']} requests saw the fault (bound {run['bound']:.1f} at "
                      f"{run['rate']:.0f} req/s, ratio {run['saw'] / max(run['bound'], 1e-9):.2f}); "
                      f"last faulty answer {run['last_s']:.2f} s after the fault", flush=True)
                table.history(world["etcd"])  # the run's changes stay readable
            live = statistics.median(r["live_s"] for r in figures)
            saw = statistics.median(r["saw"] for r in figures)
            bound = statistics.median(r["bound"] for r in figures)
            print(f"median over {args.runs}: fault -> rollback live {live:.2f} s (target <= "
                  f"{args.interval + 2:.1f} s); {saw:.0f} requests saw the fault (bound {bound:.1f}) "
                  f"with weight {args.weight}% and interval {args.interval:g} s")
    finally:
        for stop in reversed(stack):
            stop()


if __name__ == "__main__":
    main()
