"""End to end: live shadow traffic through a real Traefik, compared by a real comparator process.

One etcd, one Traefik and one comparator (gunicorn, registered like any
backend) for the module. A registered monolith stand-in answers with a
timestamp and a token that change on every call; the candidate ``users``
behaves the same on ``GET /api/users`` and has a planted divergence on
``GET /api/users/<id>``. Users' requests go through Traefik's web port and
must always be answered by the monolith, even when the comparator is killed.
``strangler diffs`` reads the comparator over HTTP (found in etcd), and its
file only once the comparator is gone.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "strangler"))
from routing_helpers import clean_routing, plan_text  # noqa: E402
from servers import QuietHTTPServer, serving_page  # noqa: E402

from router import registry  # noqa: E402
from router.keys import parse_endpoint, shadow_service  # noqa: E402
from router.registry import Registration  # noqa: E402
from strangler.cli import cli  # noqa: E402
from strangler.stack import procs  # noqa: E402

pytestmark = pytest.mark.integration

COMPARATOR = """
[backends.comparator]
command = "gunicorn -c python:strangler.shadow.gunicorn_conf --bind {host}:{port} strangler.shadow.wsgi:app"
health = "/healthz"
"""


class Stand(QuietHTTPServer):
    """A registered HTTP backend in a thread: JSON with per-call noise; ``nickname`` is settable.

    Quiet when a caller hangs up (Traefik, when the comparator is killed)."""

    def __init__(self, name: str, nickname: str = "susan") -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0]
                one = path.startswith("/api/users/")
                user = {"id": 1, "nickname": nickname if one else "susan",
                        "last_seen": f"{time.time():.6f}"}
                data = user if one else {"users": [user], "token": secrets.token_hex(8)}
                body = json.dumps({**data, "backend": name}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture(scope="module")
def world(tmp_path_factory, etcd_server, traefik_server):
    """Plan file, registered monolith and candidate, a comparator process, the table applied."""
    base = tmp_path_factory.mktemp("shadow")
    plan = base / "strangler.toml"
    plan.write_text(plan_text("incremental") + COMPARATOR)
    etcd = etcd_server.client()
    clean_routing(etcd)
    # "backend" differs on purpose between monolith and candidate: the plan ignores it
    plan.write_text(plan.read_text() + '\n[compare]\nignore = ["backend"]\n')
    stands = {"monolith": Stand("monolith"), "users": Stand("users", nickname="Susan")}
    registrations = [Registration(etcd, name, s.url, ttl=5).start() for name, s in stands.items()]
    comparator = start_comparator(base, plan, etcd_server.url)
    try:
        yield {"plan": plan, "etcd": etcd, "base": base, "comparator": comparator,
               "web": traefik_server.web_url, "etcd_url": etcd_server.url, "api": traefik_server.api_url}
    finally:
        comparator.stop()
        for registration in registrations:
            registration.stop()
        for stand in stands.values():
            stand.shutdown()
            stand.server_close()


def start_comparator(base: Path, plan: Path, etcd_url: str) -> procs.Proc:
    port = procs.free_port()
    env = {"STRANGLER_ETCD": etcd_url, "STRANGLER_BACKEND": "comparator", "STRANGLER_PLAN": str(plan),
           "STRANGLER_RUN_DIR": str(base / "run"), "STRANGLER_INSTANCE_URL": f"http://127.0.0.1:{port}",
           # a short lease: the kill test waits for it to run out (the default rides out etcd outages)
           "STRANGLER_REGISTRY_TTL": "5"}
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    proc = procs.Proc("comparator", [gunicorn, "-c", "python:strangler.shadow.gunicorn_conf", "--bind",
                                     f"127.0.0.1:{port}", "strangler.shadow.wsgi:app"],
                      base / "comparator.log", env=env, url=f"http://127.0.0.1:{port}").start()
    procs.wait_until(lambda: procs.http_ok(proc.url + "/healthz"), 20, "comparator", proc=proc)
    return proc


def run(world, *args, ok=True):
    result = CliRunner().invoke(cli, [*args, "--plan", str(world["plan"]), "--etcd", world["etcd_url"],
                                      "--traefik-api", world["api"]])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def diffs(world) -> dict:
    result = CliRunner().invoke(cli, ["diffs", "--json", "--plan", str(world["plan"]), "--etcd", world["etcd_url"],
                                      "--run-dir", str(world["base"] / "run")])
    assert result.exit_code == 0, result.output
    return {e["endpoint"]: e for e in json.loads(result.stdout)}


def wait_registered(world, present: bool, timeout: float = 15) -> None:
    procs.wait_until(lambda: bool(registry.instances(world["etcd"], "comparator")) == present,
                     timeout, "comparator registration")


def test_every_request_sent_right_after_shadow_returns_is_compared(world):
    """The comparator learns shadowed routes from etcd: a copy of a route its last read did not
    show as shadowed reads again, so traffic sent the moment shadow returns is never unrouted."""
    wait_registered(world, True)
    run(world, "plan", "apply")
    run(world, "shadow", "GET /api/users/<id>", "--to", "users")
    session = requests.Session()
    for _ in range(30):
        assert session.get(world["web"] + "/api/users/1", timeout=5).status_code == 200
    deadline = time.monotonic() + 20
    while (found := diffs(world)).get("GET /api/users/<id>", {}).get("compared", 0) < 30:
        assert "(unrouted)" not in found, found["(unrouted)"]
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    assert "(unrouted)" not in found
    entry = found["GET /api/users/<id>"]
    assert (entry["seen"], entry["compared"], entry["dropped"], entry["skipped"]) == (30, 30, 0, 0)


def test_shadow_catches_the_divergence_with_zero_false_positives(world):
    wait_registered(world, True)
    run(world, "plan", "apply")
    result = run(world, "shadow", "GET /api/users/<id>", "GET /api/users", "--to", "users")
    assert "Traefik confirmed it live" in result.output
    for _ in range(15):
        for path in ("/api/users/1", "/api/users"):
            answer = requests.get(world["web"] + path, timeout=5)
            assert answer.status_code == 200 and answer.json()["backend"] == "monolith"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = diffs(world)
        if all(found.get(e, {}).get("compared", 0) >= 15 for e in ("GET /api/users/<id>", "GET /api/users")):
            break
        time.sleep(0.2)
    one, many = found["GET /api/users/<id>"], found["GET /api/users"]
    assert (one["target"], one["differing"], one["diff_rate"]) == ("users", one["compared"], 1.0)
    assert [p["pattern"] for p in one["patterns"]] == ["nickname"]
    assert one["examples"][0]["differences"][0]["right"] == "Susan"
    assert (many["differing"], many["errors"], many["dropped"]) == (0, 0, 0)
    assert {"token", "users[*].last_seen"} <= set(many["noise"])
    text = CliRunner().invoke(cli, ["diffs", "GET /api/users/<id>", "--plan", str(world["plan"]),
                                    "--etcd", world["etcd_url"], "--run-dir", str(world["base"] / "run")]).output
    assert "nickname" in text and "100.0%" in text


def test_the_comparator_process_takes_copies_marked_by_traefik_only(world):
    """Direct requests to the comparator (no mark, a wrong one) are refused and not counted; a
    body over the limit is refused even when marked; Traefik's copies keep being compared."""
    from router import table

    url = world["comparator"].url
    secret = table.load_options(world["etcd"]).mirror_secret
    assert secret and len(secret) >= 32
    before = diffs(world)["GET /api/users/<id>"]["seen"]
    for headers in ({}, {"X-Strangler-Mirror": "guess"}, {"X-Strangler-Mirror": secret + "x"}):
        answer = requests.get(url + "/api/users/1", headers=headers, timeout=5)
        assert answer.status_code == 403, headers
    huge = requests.post(url + "/api/users", data=b"x" * (2 << 20), timeout=10,
                         headers={"X-Strangler-Mirror": secret})
    assert huge.status_code == 413
    requests.get(world["web"] + "/api/users/1", timeout=5)  # one real copy, through Traefik
    deadline = time.monotonic() + 10
    while diffs(world)["GET /api/users/<id>"]["seen"] < before + 1:
        assert time.monotonic() < deadline, "Traefik's marked copy was not taken"
        time.sleep(0.1)
    assert diffs(world)["GET /api/users/<id>"]["seen"] == before + 1  # the refused ones were not counted


def test_a_shadow_of_a_share_has_traefik_copy_that_share_only(world):
    """--percent 25: Traefik's mirroring service says 25 and copies one request in four; the
    route says so; shadowing it whole again restores 100 %."""
    wait_registered(world, True)
    spec = "GET /api/users/<id>"
    result = run(world, "shadow", spec, "--to", "users", "--percent", "25")
    assert "25% of requests copied" in result.output and "Traefik confirmed it live" in result.output
    row = {r["endpoint"]: r for r in json.loads(run(world, "routes", "--json").stdout)}[spec]
    assert row["mirror_percent"] == 25 and "copy of 25% to comparator" in row["serving"]
    service = f"{shadow_service(parse_endpoint(spec).id)}@etcd"  # the route's mirroring service
    mirroring = requests.get(f"{world['api']}/api/http/services/{service}", timeout=5).json()["mirroring"]
    assert [m["percent"] for m in mirroring["mirrors"]] == [25]
    before = diffs(world)[spec]["seen"]
    session = requests.Session()
    for _ in range(200):
        assert session.get(world["web"] + "/api/users/1", timeout=5).status_code == 200
    deadline = time.monotonic() + 20
    while diffs(world)[spec]["seen"] - before < 45:  # Traefik copies 50 of the 200, one in four
        assert time.monotonic() < deadline, diffs(world)[spec]
        time.sleep(0.1)
    time.sleep(1)  # copies still on their way would have been counted by now
    assert 45 <= diffs(world)[spec]["seen"] - before <= 55
    run(world, "shadow", spec, "--to", "users")
    row = {r["endpoint"]: r for r in json.loads(run(world, "routes", "--json").stdout)}[spec]
    assert row["mirror_percent"] == 100


@pytest.mark.parametrize("args, message", [
    (["--percent", "0"], "0 is not in the range 1<=x<=100"),
    (["--percent", "101"], "101 is not in the range 1<=x<=100"),
    (["--percent", "ten"], "'ten' is not a valid integer"),
])
def test_a_bad_share_is_refused_in_one_line_and_writes_nothing(world, args, message):
    before = json.loads(run(world, "history", "--json").stdout)
    result = run(world, "shadow", "GET /api/users", "--to", "users", *args, ok=False)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert json.loads(run(world, "history", "--json").stdout) == before


def test_off_with_a_share_is_a_usage_error(world):
    result = run(world, "shadow", "--off", "GET /api/users", "--percent", "50", ok=False)
    assert result.exit_code == 2 and "--off takes endpoints only" in result.output


def test_shadow_off_and_rollback_are_recorded_in_history(world):
    run(world, "shadow", "--off", "GET /api/users")
    rows = {r["endpoint"]: r for r in json.loads(run(world, "routes", "--json").stdout)}
    assert rows["GET /api/users"]["mirror"] is None
    assert rows["GET /api/users/<id>"]["mirror"] == "comparator"
    run(world, "rollback")
    rows = {r["endpoint"]: r for r in json.loads(run(world, "routes", "--json").stdout)}
    assert rows["GET /api/users"]["mirror"] == "comparator"
    whats = [c["what"] for c in json.loads(run(world, "history", "--json").stdout)]
    assert whats[-3:] == ["shadow GET /api/users/<id> to users",
                          "shadow off GET /api/users",
                          f"roll back change {len(whats) - 1} (shadow off GET /api/users)"]


def test_diffs_reads_the_running_comparator_over_http_not_its_file(world, tmp_path):
    """As under docker-compose: the command's run dir holds no shadow.sqlite (the comparator's is
    out of reach), so what it prints can only have come from the comparator, found in etcd."""
    stored = world["base"] / "run" / "shadow.sqlite"
    assert stored.is_file()
    result = CliRunner().invoke(cli, ["diffs", "--json", "--examples", "1", "--plan", str(world["plan"]),
                                      "--etcd", world["etcd_url"], "--run-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"read from the comparator at {world['comparator'].url}"
    one = {e["endpoint"]: e for e in json.loads(result.stdout)}["GET /api/users/<id>"]
    assert one["differing"] >= 15 and one["dropped"] == 0 and len(one["examples"]) == 1
    assert one["examples"][0]["differences"][0]["right"] == "Susan"
    text = CliRunner().invoke(cli, ["diffs", "GET /api/users/<id>", "--plan", str(world["plan"]),
                                    "--etcd", world["etcd_url"], "--run-dir", str(tmp_path)]).output
    assert text.splitlines()[0] == f"read from the comparator at {world['comparator'].url}"
    assert "nickname" in text and "dropped" in text


def test_the_comparators_report_needs_the_mirror_secret_and_bounded_parameters(world):
    from router import table

    url = world["comparator"].url + "/_shadow/diffs"
    secret = table.load_options(world["etcd"]).mirror_secret
    assert requests.get(url, timeout=5).status_code == 403
    assert requests.get(url, headers={"X-Strangler-Mirror": "guess"}, timeout=5).status_code == 403
    for query, named in (("examples=51", "examples"), ("top=-1", "top"), ("limit=5", "limit"),
                         ("endpoint=" + "x" * 501, "endpoint"),
                         # digits to str.isdigit but not to int(): a 400 naming it, not a 500
                         ("examples=%C2%B2", "examples"), ("top=%E2%91%A0", "top")):
        answer = requests.get(f"{url}?{query}", headers={"X-Strangler-Mirror": secret}, timeout=5)
        assert answer.status_code == 400 and named in answer.json()["error"], query
    # a method no route takes, with the secret: one line of JSON, not Werkzeug's HTML page
    answer = requests.request("PROPFIND", url, headers={"X-Strangler-Mirror": secret}, timeout=5)
    assert answer.status_code == 405 and answer.headers["Content-Type"] == "application/json"
    assert "PROPFIND" in answer.json()["error"]
    answer = requests.get(url, params={"endpoint": "GET /api/users", "examples": 0},
                          headers={"X-Strangler-Mirror": secret}, timeout=5)
    assert answer.status_code == 200
    (entry,) = answer.json()["endpoints"]
    assert entry["endpoint"] == "GET /api/users" and entry["examples"] == []


def load(web: str, stop: threading.Event, results: list) -> None:
    session = requests.Session()
    while not stop.is_set():
        try:
            status = session.get(web + "/api/users/1", timeout=5).status_code
        except requests.RequestException as exc:
            status = exc.__class__.__name__
        results.append(status)


def test_killing_the_comparator_under_load_fails_no_user_request(world):
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=load, args=(world["web"], stop, results)) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        os.killpg(world["comparator"].pid, signal.SIGKILL)  # master and worker, no goodbye
        wait_registered(world, False)  # the lease ran out: Traefik's comparator service has no server
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    failed = [r for r in results if r != 200]
    assert len(results) > 100 and failed == [], (len(results), failed[:5])
    # still shadowed, and nobody to copy to: users are served all the same (traefik#7220)
    assert requests.get(world["web"] + "/api/users/1", timeout=5).status_code == 200
    refused = run(world, "shadow", "GET /api/users/<id>", "--to", "users", ok=False)
    assert refused.exit_code == 1
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1 and "comparator has no healthy instance" in lines[0], refused.output


def test_diffs_without_a_comparator_reads_the_file_and_says_so(world, tmp_path):
    """Runs after the comparator was killed: its file is read as last written, the first line says
    which and why; with neither a comparator nor a file, one line saying what to do."""
    run_dir = world["base"] / "run"
    result = CliRunner().invoke(cli, ["diffs", "--plan", str(world["plan"]), "--etcd", world["etcd_url"],
                                      "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"read from {run_dir / 'shadow.sqlite'} (as last written: no comparator registered")
    assert "GET /api/users/<id>" in result.output
    gone = CliRunner().invoke(cli, ["diffs", "--plan", str(world["plan"]), "--etcd", world["etcd_url"],
                                    "--run-dir", str(tmp_path)])
    assert gone.exit_code == 1
    (line,) = gone.output.strip().splitlines()
    assert "no comparator registered" in line and "no results file" in line and "strangler up" in line
    named = CliRunner().invoke(cli, ["diffs", "--plan", str(world["plan"]), "--etcd", world["etcd_url"],
                                     "--comparator", world["comparator"].url, "--run-dir", str(run_dir)])
    assert named.exit_code == 1 and "did not answer" in named.output


@pytest.mark.parametrize("option, url", [("--etcd", "http://[::1"), ("--etcd", "http://127.0.0.1:99999"),
                                         ("--comparator", "http://127.0.0.1:99999"),
                                         ("--comparator", "not a url")])
def test_diffs_refuses_a_malformed_url_in_one_line(tmp_path, option, url):
    """A malformed --etcd or --comparator is a usage error (exit 2, one line naming it), not a traceback."""
    plan = tmp_path / "strangler.toml"
    plan.write_text(plan_text("incremental"))
    args = ["diffs", "--plan", str(plan), "--run-dir", str(tmp_path), option, url]
    if option == "--comparator":
        args += ["--etcd", "http://127.0.0.1:1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert option in result.output.strip().splitlines()[-1]


@pytest.mark.parametrize("body", [b'{"endpoints": [1, 2]}', b'{"endpoints": {"GET /x": 1}}',
                                  b'{"endpoints": [{"endpoint": "GET /x"}]}', b'{"endpoints": "GET /x"}',
                                  b'[1]', b'{"endpoints": null}'])
def test_diffs_refuses_an_answer_of_another_shape_in_one_line(world, tmp_path, body):
    """A comparator of another version (or not one at all) answering 200: one line saying so, no traceback."""
    # something registered or named as the comparator that answers 200 with JSON of another shape
    with serving_page(body, "", content_type="application/json") as odd:
        for extra in ([], ["--json"]):
            result = CliRunner().invoke(cli, ["diffs", *extra, "--plan", str(world["plan"]), "--etcd",
                                              world["etcd_url"], "--comparator", odd,
                                              "--run-dir", str(tmp_path)])
            assert result.exit_code == 1, (body, result.output, result.exception)
            (line,) = result.output.strip().splitlines()
            assert "gave no report" in line, line
