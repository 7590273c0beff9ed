"""``strangler compare`` through the CLI against two real Flack monoliths served over HTTP.

Both servers start from a copy of the same seeded SQLite file. The candidate
is wrapped in a tiny WSGI middleware that can plant a divergence; both count
the requests they see, so a refusal can be shown to send nothing.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from monolith import create_app
from router.registry import Registration
from strangler.cli import cli

pytestmark = pytest.mark.integration

PLAN = """
[strangler]
run_dir = "run"

[backends.monolith]
command = "true"
health = "/healthz"
app = "monolith:create_app"

[backends.users]
command = "true"
health = "/healthz"
endpoints = ["GET /api/users", "GET /api/users/<id>"]

# every token use stamps the user seen and updated, on each backend at its own second
[compare."GET /api/users"]
ignore = ["users[*].last_seen_at", "users[*].updated_at"]
sets = ["users"]

[compare."GET /api/users/<id>"]
ignore = ["last_seen_at", "updated_at"]

[compare."POST /api/tokens"]
ignore = ["token"]

[[endpoints]]
endpoint = "GET /api/users"

[[endpoints]]
endpoint = "GET /api/users/<id>"

[[endpoints]]
endpoint = "POST /api/tokens"

[[endpoints]]
endpoint = "GET /api/messages"
"""

SECRETS = {"SECRET_KEY": "s" * 32, "JWT_SECRET_KEY": "j" * 32}


class Counting:
    """WSGI middleware: counts requests; on the candidate it can plant a divergence."""

    def __init__(self, app) -> None:
        self.app = app
        self.seen = 0
        self.plant: str | None = None

    def __call__(self, environ, start_response):
        self.seen += 1
        if self.plant == "updated_since>=" and "updated_since=" in environ.get("QUERY_STRING", ""):
            # ">=" instead of ">": on integer seconds, ask for one second earlier
            name, _, value = environ["QUERY_STRING"].partition("updated_since=")
            environ["QUERY_STRING"] = f"{name}updated_since={int(value.split('&')[0]) - 1}"
        if self.plant == "nickname" and environ["PATH_INFO"] == "/api/users/2":
            return self.rewrite(environ, start_response, _shout_nickname)
        if self.plant == "title" and environ["PATH_INFO"] == "/":
            return self.rewrite(environ, start_response,
                                lambda body: body.replace(b"<title>Flack</title>", b"<title>Flack 2</title>"))
        return self.app(environ, start_response)

    def rewrite(self, environ, start_response, change):
        captured = {}

        def keep(status, headers, exc_info=None):
            captured.update(status=status, headers=headers)

        data = change(b"".join(self.app(environ, keep)))
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], [*headers, ("Content-Length", str(len(data)))])
        return [data]


def _shout_nickname(body: bytes) -> bytes:
    user = json.loads(body)
    user["nickname"] = user["nickname"].upper()
    return json.dumps(user).encode()


def _config(root: Path) -> dict:
    return {"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(root / "data"),
            "DATABASE_URL": f"sqlite:///{root / 'flack.sqlite'}", **SECRETS}


def _dispose(app) -> None:
    app.extensions["link_expander"].shutdown(wait=True)
    with app.app_context():
        from monolith import db

        db.engine.dispose()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Two monolith servers on the same seeded data: ``monolith`` and ``candidate`` (Counting)."""
    seed_dir = tmp_path_factory.mktemp("seed")
    seed = create_app(_config(seed_dir))
    client = seed.test_client()
    for name in ("ann", "bob", "cat"):
        assert client.post("/api/users", json={"nickname": name, "password": "pw"}).status_code == 201
    # ann logs in before the copy: online on both, with a token both accept (same secrets)
    token = client.post("/api/tokens", headers=_basic("ann")).json["token"]
    _dispose(seed)
    # Anything the tests do must stamp a later second than the seed, or a
    # token use in the seed's second would count on one side of an
    # updated_since filter and not on the other.
    seeded_second = int(time.time())
    while int(time.time()) == seeded_second:
        time.sleep(0.05)
    started = {}
    for side in ("monolith", "candidate"):
        root = tmp_path_factory.mktemp(side)
        shutil.copy(seed_dir / "flack.sqlite", root / "flack.sqlite")
        app = create_app(_config(root))
        wrapped = Counting(app)
        httpd = make_server("127.0.0.1", 0, wrapped, threaded=True)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        started[side] = (app, wrapped, httpd, thread, f"http://127.0.0.1:{httpd.server_port}")
    yield {"token": token, **{side: (wrapped, url) for side, (_, wrapped, _, _, url) in started.items()}}
    for app, _, httpd, thread, _ in started.values():
        httpd.shutdown()
        thread.join(5)
        httpd.server_close()
        _dispose(app)


@pytest.fixture
def sides(servers: dict) -> Iterator[tuple[Counting, Counting]]:
    """The two counting wrappers, with no divergence planted when the test ends."""
    yield servers["monolith"][0], servers["candidate"][0]
    servers["candidate"][0].plant = None


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "strangler.toml"
    path.write_text(PLAN, encoding="utf-8")
    return path


@pytest.fixture
def run(servers: dict, plan_file: Path):
    """Invoke ``strangler compare ARGS`` against the two servers by URL."""

    def invoke(*args: str, urls: bool = True):
        where = ["--monolith-url", servers["monolith"][1], "--candidate-url", servers["candidate"][1]]
        return CliRunner().invoke(cli, ["compare", *args, "--plan", str(plan_file),
                                        *(where if urls else [])])

    return invoke


def _basic(nickname: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{nickname}:pw".encode()).decode()}


def test_identical_behaviour_exits_0_despite_fresh_tokens_and_seen_times(run, servers):
    result = run("GET /api/users/1", "--token", servers["token"])
    assert result.exit_code == 0, result.output
    assert "SAME GET /api/users/1: no real differences" in result.output
    assert "ann" in result.output
    login = f"Authorization: {_basic('bob')['Authorization']}"
    result = run("POST /api/tokens", "--header", login, "--allow-writes", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["same"] and found["results"][0]["ignored"] == ["token"]


def test_text_bodies_are_compared_line_by_line(run, sides):
    result = run("GET /")
    assert result.exit_code == 0, result.output
    assert "SAME GET /: no real differences" in result.output and "<html" in result.output.lower()
    sides[1].plant = "title"
    result = run("GET /")
    assert result.exit_code == 1, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    marked = [line for line in rows if "≠" in line]
    assert len(marked) == 1 and "<title>Flack</title>" in marked[0] and "Flack 2" in marked[0]
    assert '≠ body:6: text "  <title>Flack</title>" -> "  <title>Flack 2</title>"' in result.output
    assert "DIFFERENT GET /: 1 difference(s) (body)" in result.output


def test_a_changed_field_exits_1_and_names_the_path(run, sides):
    sides[1].plant = "nickname"
    result = run("GET /api/users/2")
    assert result.exit_code == 1, result.output
    assert "DIFFERENT GET /api/users/2: 1 difference(s) (nickname)" in result.output
    assert '"bob"' in result.output and '"BOB"' in result.output
    assert run("GET /api/users/1").exit_code == 0


def test_updated_since_with_greater_or_equal_is_caught_in_json(run, sides, servers):
    import requests

    def ids(side: str) -> set[int]:
        url = f"{servers[side][1]}/api/users?updated_since={since}"
        return {u["id"] for u in requests.get(url, timeout=5).json()["users"]}

    seeded = requests.get(f"{servers['monolith'][1]}/api/users/3", timeout=5).json()
    assert seeded["nickname"] == "cat"  # cat never logs in: updated_at as seeded, on both
    since = seeded["updated_at"]
    sides[1].plant = "updated_since>="
    result = run(f"GET /api/users?updated_since={since}", "--json")
    assert result.exit_code == 1, result.output
    found = json.loads(result.stdout)
    differences = found["results"][0]["differences"]
    assert found["results"][0]["endpoint"] == "GET /api/users"
    assert {(d["kind"], d["pattern"]) for d in differences} == {("extra", "users[*]")}
    only_candidate = ids("candidate") - ids("monolith")
    assert 3 in only_candidate
    assert {d["right"]["id"] for d in differences} == only_candidate
    sides[1].plant = None
    assert run(f"GET /api/users?updated_since={since}").exit_code == 0


def test_file_prints_a_summary_per_endpoint(run, sides, tmp_path):
    requests_txt = tmp_path / "requests.txt"
    requests_txt.write_text(
        "# users\nGET /api/users\nGET /api/users/1\nGET /api/users/2\n"
        "GET /api/users/3\n    Accept: application/json\nGET /nowhere\n", encoding="utf-8")
    assert run("--file", str(requests_txt)).exit_code == 0
    sides[1].plant = "nickname"
    result = run("--file", str(requests_txt))
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    row = next(line for line in lines if "GET /api/users/<id>" in line)
    assert "│ 3 " in row and "│ 1 " in row and "nickname (1)" in row
    assert any("line 4: DIFFERENT GET /api/users/2" in line for line in lines)
    assert any("GET /nowhere" in line for line in lines)
    assert "DIFFERENT: 1 of 5 request(s) differ" in result.output


def test_unsafe_method_is_refused_and_nothing_is_sent(run, sides, tmp_path):
    before = (sides[0].seen, sides[1].seen)
    result = run("POST /api/users", "--data", '{"nickname": "dan", "password": "pw"}')
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "Error: POST would write twice (once per backend); pass --allow-writes to compare it anyway"]
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("GET /api/users\nDELETE /api/tokens\n", encoding="utf-8")
    result = run("--file", str(mixed))
    assert result.exit_code == 2 and "DELETE (line 2) would write twice" in result.stderr
    assert (sides[0].seen, sides[1].seen) == before


def test_errors_exit_2_in_one_line(run, plan_file, servers, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = CliRunner().invoke(cli, ["compare", "GET /api/users/1", "--plan", str(plan_file),
                                      "--monolith-url", servers["monolith"][1], "--candidate-url", dead])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"GET {dead}/api/users/1 failed: cannot connect; is it running?" in result.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("GET /api/users\nFETCH /x\n", encoding="utf-8")
    result = run("--file", str(bad))
    assert result.exit_code == 2 and "line 2: unknown method 'FETCH'" in result.stderr
    assert run("GET /api/users", "--data", "{nope", "--allow-writes").exit_code == 2
    result = run("GET /api/users/1", urls=False)
    assert result.exit_code == 2 and "--against" in result.stderr


def test_backends_resolved_by_name_through_the_registry(etcd_server, servers, plan_file):
    etcd = etcd_server.client()
    with Registration(etcd, "monolith", servers["monolith"][1], ttl=5), \
         Registration(etcd, "users", servers["candidate"][1], ttl=5):
        result = CliRunner().invoke(cli, ["compare", "GET /api/users", "--against", "users",
                                          "--plan", str(plan_file), "--etcd", etcd_server.url])
        assert result.exit_code == 0, result.output
        assert servers["candidate"][1] in result.output
    result = CliRunner().invoke(cli, ["compare", "GET /api/users", "--against", "users",
                                      "--plan", str(plan_file), "--etcd", etcd_server.url])
    assert result.exit_code == 2
    assert "no healthy instance of monolith is registered" in result.stderr
