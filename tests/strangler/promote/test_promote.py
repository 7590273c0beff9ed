"""End to end: `strangler promote` carried by a real controller process, judged on a real Traefik's
metrics and a real comparator's diff rate, with candidates the tests start and misbehave on purpose.

One etcd, one Traefik, one comparator and one controller for the module; each test
starts from a clean route table, drives user traffic through Traefik's web port
(bounded in time and count) and reads the outcome through the CLI and Traefik.
Intervals are short (1.5 s) to bound the runtime.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from routing_helpers import clean_routing, plan_text  # noqa: E402

from router.etcd import Etcd  # noqa: E402
from router.registry import Registration  # noqa: E402
from strangler.cli import cli  # noqa: E402
from strangler.promote import records  # noqa: E402
from strangler.stack import procs  # noqa: E402

pytestmark = pytest.mark.integration

USER = "GET /api/users/<id>"
COMPARATOR = """
[backends.comparator]
command = "gunicorn -c python:strangler.shadow.gunicorn_conf --bind {host}:{port} strangler.shadow.wsgi:app"
health = "/healthz"

[compare]
ignore = ["backend"]

[tables.users]
inserted_by = ["POST /api/users"]
"""
FAST = ["--interval", "1.5s", "--min-requests", "10"]


class Candidate(ThreadingHTTPServer):
    """A registered backend in a thread whose behaviour the test sets: ``mode`` is
    ``good`` (fast), ``errors`` (30 % 500), ``slow`` (3x the monolith) or ``differ``
    (another body); ``delay`` is its normal answer time."""

    daemon_threads = True

    def __init__(self, name: str, delay: float) -> None:
        self.name, self.delay, self.mode = name, delay, "good"
        self.served = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without this, Nagle and delayed ACKs add
            # ~40-200 ms to some answers, and latency is what these backends are judged on
            disable_nagle_algorithm = True

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status, nickname = 200, "susan"
                if self.path != "/healthz":
                    server.served += 1
                    time.sleep(server.delay * (3 if server.mode == "slow" else 1))
                    if server.mode == "errors" and random.random() < 0.3:  # noqa: S311
                        status = 500
                    if server.mode == "differ":
                        nickname = "Susan"
                body = json.dumps({"id": 1, "nickname": nickname, "backend": server.name}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.do_GET()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


class Controllers:
    """The controller process (``python -m strangler.promote``), restartable by the tests."""

    def __init__(self, base: Path, etcd_url: str, traefik_url: str, store: Path) -> None:
        self.argv = [sys.executable, "-m", "strangler.promote", "--etcd", etcd_url,
                     "--traefik-metrics", traefik_url, "--shadow-store", str(store), "--tick", "0.1"]
        self.base, self.etcd_url, self.proc = base, etcd_url, None
        self.count = 0

    def start(self) -> procs.Proc:
        self.count += 1
        self.proc = procs.Proc(f"controller{self.count}", self.argv, self.base / "controller.log").start()
        procs.wait_until(lambda: (records.controller_alive(Etcd(self.etcd_url)) or {}).get("pid")
                         == self.proc.pid, 20, "controller", proc=self.proc)
        return self.proc

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.popen.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory, etcd_server, traefik_server):
    """Plan, registered monolith and candidate, a comparator and a controller."""
    base = tmp_path_factory.mktemp("promote")
    plan = base / "strangler.toml"
    # the monolith keeps the users table: POST /api/users inserts rows, with no id lanes anywhere
    text = plan_text("incremental").replace('app = "monolith:create_app"',
                                            'app = "monolith:create_app"\ntables = ["users"]')
    plan.write_text(text + COMPARATOR)
    etcd = etcd_server.client()
    # the candidate answers 10x faster: its p99 stays under 1.5x the monolith's through the
    # scheduling noise of a busy shared machine
    backends = {"monolith": Candidate("monolith", 0.05), "users": Candidate("users", 0.005)}
    registrations = [Registration(etcd, name, b.url, ttl=5).start() for name, b in backends.items()]
    comparator = start_comparator(base, plan, etcd_server.url)
    controllers = Controllers(base, etcd_server.url, traefik_server.api_url, base / "run" / "shadow.sqlite")
    controllers.start()
    try:
        yield {"plan": plan, "etcd": etcd, "base": base, "users": backends["users"],
               "monolith": backends["monolith"], "controllers": controllers,
               "web": traefik_server.web_url, "etcd_url": etcd_server.url, "api": traefik_server.api_url}
    finally:
        controllers.stop()
        comparator.stop()
        for registration in registrations:
            registration.stop()
        for backend in backends.values():
            backend.shutdown()
            backend.server_close()


def start_comparator(base: Path, plan: Path, etcd_url: str) -> procs.Proc:
    """The real comparator (gunicorn), registered like any backend; results in base/run/shadow.sqlite."""
    port = procs.free_port()
    env = {"STRANGLER_ETCD": etcd_url, "STRANGLER_BACKEND": "comparator", "STRANGLER_PLAN": str(plan),
           "STRANGLER_RUN_DIR": str(base / "run"), "STRANGLER_INSTANCE_URL": f"http://127.0.0.1:{port}"}
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    proc = procs.Proc("comparator", [gunicorn, "-c", "python:strangler.shadow.gunicorn_conf", "--bind",
                                     f"127.0.0.1:{port}", "strangler.shadow.wsgi:app"],
                      base / "comparator.log", env=env, url=f"http://127.0.0.1:{port}").start()
    procs.wait_until(lambda: procs.http_ok(proc.url + "/healthz"), 20, "comparator", proc=proc)
    return proc


@pytest.fixture
def w(world):
    """The world with a fresh table, no promotions, a good candidate and a running controller."""
    clean_routing(world["etcd"])
    for prefix in (records.PROMOTIONS_PREFIX, records.LOCKS_PREFIX):
        world["etcd"].delete_prefix(prefix)
    world["users"].mode = "good"
    if not world["controllers"].proc.alive():
        world["controllers"].start()
    run(world, "plan", "apply")
    return world


def run(world, *args, code=0):
    result = CliRunner().invoke(cli, [*args, "--plan", str(world["plan"]), "--etcd", world["etcd_url"],
                                      "--traefik-api", world["api"]])
    if code is not None:
        assert result.exit_code == code, result.output
    return result


class Load:
    """Users' requests through Traefik's web port from 4 threads, bounded in time and count."""

    def __init__(self, web: str, seconds: float = 60, most: int = 30000,
                 requests_: tuple[tuple[str, str], ...] = (("GET", "/api/users/1"),)) -> None:
        self.web, self.requests = web, requests_
        self.until, self.most = time.monotonic() + seconds, most
        self.statuses: list[tuple[float, int, str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._send, daemon=True) for _ in range(4)]

    def _send(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set() and time.monotonic() < self.until and len(self.statuses) < self.most:
                method, path = self.requests[len(self.statuses) % len(self.requests)]
                try:
                    answer = session.request(method, self.web + path, timeout=5)
                    self.statuses.append((time.monotonic(), answer.status_code,
                                          answer.json().get("backend", "") if answer.ok else ""))
                except (requests.RequestException, ValueError):
                    self.statuses.append((time.monotonic(), 0, ""))
                time.sleep(0.005)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def history(world) -> list[dict]:
    return json.loads(run(world, "history", "--json").stdout)


def route(world, spec=USER) -> dict:
    rows = json.loads(run(world, "routes", "--json").stdout)  # stderr may carry a warning
    return next(r for r in rows if r["endpoint"] == spec)


def promotion(world, promotion_id=None) -> dict:
    """The latest promotion (or ``promotion_id``) as `strangler promotions --json` lists it ({} if none)."""
    found = json.loads(run(world, "promotions", "--json").stdout)
    if not found:
        return {}
    return found[-1] if promotion_id is None else next(p for p in found if p["id"] == promotion_id)


def test_a_good_candidate_is_promoted_to_100(w):
    with Load(w["web"]):
        result = run(w, "promote", USER, "--to", "users", "--steps", "25,50,100", *FAST, code=None)
    assert result.exit_code == 0, result.output
    assert "25%: pass" in result.output and "50%: pass" in result.output and "promoted" in result.output
    assert route(w)["state"] == "flipped" and route(w)["backend"] == "users"
    whats = [c["what"] for c in history(w)]
    assert any(what.startswith("promotion 1: 25% of GET /api/users/<id> to users") for what in whats)
    assert any("promoted GET /api/users/<id> to users (50%: pass" in what for what in whats)
    assert promotion(w)["state"] == "promoted"
    assert not w["etcd"].get_prefix(records.LOCKS_PREFIX)[0]  # the endpoint is free again


def test_a_candidate_answering_500_on_30_percent_is_rolled_back_at_the_first_step(w):
    w["users"].mode = "errors"
    with Load(w["web"]):
        result = run(w, "promote", USER, "--to", "users", "--steps", "25,50,100", *FAST, code=None)
    assert result.exit_code == 1, result.output
    assert "25%: fail" in result.output and "error rate" in result.output and "50%" not in result.output
    assert route(w)["state"] == "monolith"
    last = history(w)[-1]["what"]
    assert last.startswith("promotion 1: rolled back GET /api/users/<id>") and "error rate" in last
    assert "5xx" in last  # the figures are in history


def test_a_slow_candidate_is_rolled_back_on_latency(w):
    # 100 ms against 300 ms: well above the scheduling noise of a busy shared machine,
    # which adds tens of milliseconds to a small sample's p99 on both sides
    w["monolith"].delay = w["users"].delay = 0.1
    w["users"].mode = "slow"
    try:
        with Load(w["web"]):
            result = run(w, "promote", USER, "--to", "users", "--steps", "25,100", "--interval", "2s",
                         "--min-requests", "10", code=None)
    finally:
        w["monolith"].delay, w["users"].delay = 0.05, 0.005
    assert result.exit_code == 1, result.output
    assert "p99" in result.output and "the current backend's" in result.output
    assert route(w)["state"] == "monolith"


def test_a_differing_candidate_is_rolled_back_on_diff_rate_while_shadowed(w):
    run(w, "shadow", USER, "--to", "users")
    w["users"].mode = "differ"
    with Load(w["web"]):
        result = run(w, "promote", USER, "--to", "users", "--steps", "25,100", *FAST, code=None)
    assert result.exit_code == 1, result.output
    assert "diff rate" in result.output
    row = route(w)
    assert row["state"] == "shadow" and row["backend"] == "monolith"  # back as before: shadowed


def test_killing_the_controller_mid_promotion_ends_promoted_or_rolled_back(w):
    with Load(w["web"], seconds=90):
        run(w, "promote", USER, "--to", "users", "--steps", "20,50,100", *FAST, "--detach")
        procs.wait_until(lambda: promotion(w).get("phase") == "watch", 20, "the first step")
        w["controllers"].kill()
        # killed mid-way: the promotion sits in etcd, its route half-way, and nobody carries it
        assert promotion(w)["state"] == "running" and route(w)["state"] == "canary"
        w["controllers"].start()
        procs.wait_until(lambda: promotion(w)["state"] in records.ENDED, 40, "the promotion's end")
    state = promotion(w)["state"]
    assert route(w)["state"] == ("flipped" if state == records.PROMOTED else "monolith")
    assert not w["etcd"].get_prefix(records.LOCKS_PREFIX)[0]


def test_abort_rolls_back_and_a_second_promotion_is_refused_meanwhile(w):
    with Load(w["web"]):
        run(w, "promote", USER, "--to", "users", "--steps", "10,100", "--interval", "30s", "--detach")
        procs.wait_until(lambda: promotion(w).get("phase") == "watch", 20, "the first step")
        before = w["etcd"].get_prefix("strangler/")[0]
        second = run(w, "promote", "--service", "users", "--to", "users", code=2)
        assert "promotion 1 is running" in second.output
        flip = run(w, "flip", USER, "--to", "users", code=1)
        assert "promotion 1 is moving these endpoints" in flip.output
        assert w["etcd"].get_prefix("strangler/")[0] == before
        aborted = run(w, "promote", "--abort", USER, code=0)
    assert "abort asked" in aborted.output and "rolled back" in aborted.output
    assert route(w)["state"] == "monolith" and promotion(w)["outcome"].startswith("rolled back: aborted by")


def test_ctrl_c_stops_the_watching_not_the_promotion(w):
    import subprocess

    strangler = str(Path(sys.executable).parent / "strangler")
    with Load(w["web"]):
        cli_proc = subprocess.Popen(
            # a 6 s step: the Ctrl-C lands while it is watched, however slow a busy machine makes the test
            [strangler, "promote", USER, "--to", "users", "--steps", "50,100", "--interval", "6s",
             "--min-requests", "10", "--plan", str(w["plan"]),
             "--etcd", w["etcd_url"], "--traefik-api", w["api"]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            procs.wait_until(lambda: promotion(w).get("phase") == "watch", 30, "the first step")
            cli_proc.send_signal(signal.SIGINT)
            output, _ = cli_proc.communicate(timeout=15)
        finally:
            if cli_proc.poll() is None:
                cli_proc.kill()
                cli_proc.wait()
        assert cli_proc.returncode == 130, output
        assert "stopped watching; promotion 1 goes on in the controller" in output
        procs.wait_until(lambda: promotion(w)["state"] in records.ENDED, 30, "the promotion's end")
    assert promotion(w)["state"] == records.PROMOTED, promotion(w)["log"]


MIXED = (("POST", "/api/users"), ("GET", "/api/users"), ("GET", "/api/users/1"))


def test_an_inserting_endpoint_is_shadowed_first_then_flipped_whole_and_watched(w):
    with Load(w["web"], requests_=MIXED):
        result = run(w, "promote", "POST /api/users", "--to", "users", *FAST, code=None)
    assert result.exit_code == 0, result.output
    assert "it inserts rows, so no canary: shadow 2 read endpoint(s) first" in result.output
    assert "shadow: pass" in result.output and "100%: pass" in result.output
    assert route(w, "POST /api/users")["state"] == "flipped"
    assert route(w, "GET /api/users")["state"] == "monolith"  # the shadow it added is gone
    whats = [c["what"] for c in history(w)]
    assert any("flip POST /api/users whole to users (inserts rows: no canary)" in what for what in whats)


def test_an_inserting_endpoint_flipped_whole_is_rolled_back_on_errors(w):
    with Load(w["web"], requests_=MIXED):
        result = run(w, "promote", "POST /api/users", "--to", "users", *FAST, "--detach")
        procs.wait_until(lambda: promotion(w).get("step") == 1, 30, "the whole flip")
        w["users"].mode = "errors"
        procs.wait_until(lambda: promotion(w)["state"] in records.ENDED, 30, "the verdict")
    assert promotion(w)["state"] == records.ROLLED_BACK, promotion(w)["log"]
    assert "error rate" in promotion(w)["outcome"] and result.exit_code == 0
    assert route(w, "POST /api/users")["state"] == "monolith"
    assert route(w, "GET /api/users")["state"] == "monolith" and route(w, "GET /api/users")["mirror"] is None


BAD = [
    (["GET /api/nope", "--to", "users"], "unknown endpoint"),
    ([USER, "--to", "userz"], 'unknown backend "userz"'),
    ([USER, "--to", "users", "--steps", "0,200"], "from 1 to 100"),
    ([USER, "--to", "users", "--steps", "50,25"], "must rise"),
    ([USER, "--to", "users", "--interval", "-1"], "--interval '-1'"),
    ([USER, "--to", "users", "--max-error-rate", "150%"], "from 0% to 100%"),
    ([USER], "--to BACKEND"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(w, args, message):
    before = w["etcd"].get_prefix("strangler/")[0]
    result = run(w, "promote", *args, code=2)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output, result.output
    assert w["etcd"].get_prefix("strangler/")[0] == before
