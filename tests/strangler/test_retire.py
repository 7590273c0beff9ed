"""``strangler retire`` and ``unretire`` on one real stack (``up --detach`` of the repository's plan).

In order, each test building on the last: bad input (exit 2) and retiring
while the monolith still serves (exit 1) change nothing; every service is
flipped; traffic on the catch-all in the window refuses; health checks
through Traefik do not; retire stops the monolith's instances and the
followers, turns write-through off and the contract still passes through
Traefik; ``status`` and ``history`` say so; ``unretire`` catches the
monolith's database up and brings the monolith back; a missing database
refuses ``unretire``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
pytest.register_assert_rewrite("flack_contract")
import flack_contract as fc  # noqa: E402
from platform_stack import Platform, down, up  # noqa: E402

from router.etcd import Etcd  # noqa: E402
from router.keys import Endpoint, Route  # noqa: E402
from strangler.cli import cli as strangler_cli  # noqa: E402
from strangler.stack.retire import (  # noqa: E402
    RETIRED_KEY,
    parse_window,
    requests_besides,
    router_requests,
    served_by_monolith,
)

STRANGLER = str(Path(sys.executable).parent / "strangler")
CONTRACT = ("register", "get_user", "list_users", "new_token", "new_message", "list_messages", "get_message")


def test_windows_parse_to_seconds_within_bounds() -> None:
    assert [parse_window(t) for t in ("10m", "5s", "30", "1.5h", " 2m ")] == [600, 5, 30, 5400, 120]
    for bad in ("", "m", "10 m", "-5s", "0s", "25h", "1d", "5x"):
        with pytest.raises(ValueError, match="window|duration"):
            parse_window(bad)


def test_served_leaves_out_the_monolith_health_path_and_counts_every_share() -> None:
    health = Endpoint("GET", "/healthz")
    routes = [Route(health), Route(Endpoint("GET", "/api/users"), backend="users"),
              Route(Endpoint("PREFIX", "/static/")),
              Route(Endpoint("GET", "/api/messages"), backend="messages", weights={"messages": 90, "monolith": 10}),
              Route(Endpoint("POST", "/api/tokens"), backend="tokens", mirror="monolith")]
    assert served_by_monolith(routes, health) == ["GET /api/messages", "POST /api/tokens", "PREFIX /static/"]


METRICS = """# TYPE traefik_router_requests_total counter
traefik_router_requests_total{code="200",method="GET",protocol="http",router="get-healthz@etcd",service="monolith@etcd"} %d
traefik_router_requests_total{code="404",method="GET",protocol="http",router="catch-all@etcd",service="monolith@etcd"} %d
traefik_router_requests_total{code="200",method="GET",protocol="http",router="get-api-users@etcd",service="users@etcd"} 50
traefik_service_requests_total{code="200",method="GET",protocol="http",service="monolith@etcd"} 99
"""


def test_requests_besides_health_checks_by_router() -> None:
    before = router_requests(METRICS % (10, 3), "monolith")
    assert before == {"get-healthz": 10, "catch-all": 3}
    assert requests_besides(before, router_requests(METRICS % (40, 3), "monolith"), "get-healthz") == 0
    assert requests_besides(before, router_requests(METRICS % (40, 5), "monolith"), "get-healthz") == 2
    assert requests_besides(before, router_requests(METRICS % (1, 3), "monolith"), "get-healthz") is None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = up(tmp_path_factory.mktemp("retire"))
    try:
        yield platform
    finally:
        down(platform.run_dir)


def cli(stack: Platform, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """The real CLI against the module's stack."""
    return subprocess.run([STRANGLER, *args, "--plan", str(stack.plan), "--run-dir", str(stack.run_dir)],
                          capture_output=True, text=True, timeout=timeout)


def status(stack: Platform) -> dict:
    """``status --json``, run in this process: the tests read it often; the commands they test run apart."""
    result = CliRunner().invoke(strangler_cli, ["status", "--json", "--plan", str(stack.plan),
                                                "--run-dir", str(stack.run_dir)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # stderr may carry a warning


def instances(stack: Platform, backend: str, shown: dict | None = None) -> list[dict]:
    """``backend``'s instances in ``status --json`` (``shown``, or a fresh one)."""
    rows = [row for row in (shown or status(stack))["backends"] if row["backend"] == backend]
    return rows[0]["instances"] if rows else []


def processes(stack: Platform, shown: dict | None = None) -> dict[str, dict]:
    """The stack's processes in ``status --json`` (``shown``, or a fresh one), by name."""
    return {p["name"]: p for p in (shown or status(stack))["processes"]}


def running(stack: Platform, shown: dict | None = None) -> set[str]:
    return {name for name, p in processes(stack, shown).items() if p["running"]}


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def nicknames(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT nickname FROM users")}


def monolith_db(stack: Platform) -> Path:
    return stack.run_dir / "data" / "monolith.sqlite"


def unchanged(stack: Platform) -> dict:
    """Nothing was retired: no record, the monolith healthy, its followers running; ``status --json``."""
    assert Etcd(stack.state["etcd"]).get(RETIRED_KEY) is None
    shown = status(stack)
    assert [i["healthy"] for i in instances(stack, "monolith", shown)] == [True]
    assert {"sync-users", "sync-messages"} <= running(stack, shown)
    return shown


@pytest.mark.parametrize(("args", "hint"), [
    (["--window", "5x"], "--window"), (["--window", "0s"], "--window"), (["--window", "25h"], "--window"),
    (["users"], "BACKEND"), (["--allow", "-1"], "--allow"),
])
def test_bad_input_is_a_usage_error_and_changes_nothing(stack: Platform, args: list[str], hint: str) -> None:
    result = cli(stack, "retire", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert hint in result.stderr and "Traceback" not in result.stderr
    assert Etcd(stack.state["etcd"]).get(RETIRED_KEY) is None


def test_retire_refuses_while_the_monolith_serves(stack: Platform) -> None:
    result = cli(stack, "retire", "--window", "1s")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "still serves" in lines[0] and "GET /api/users" in lines[0]
    assert "GET /healthz" not in lines[0]  # the monolith's own health path never moves
    unchanged(stack)


def test_unretire_refuses_when_not_retired(stack: Platform) -> None:
    result = cli(stack, "unretire")
    assert result.returncode == 1 and "not retired" in result.stderr
    unchanged(stack)


def test_traffic_the_monolith_still_answers_refuses(stack: Platform) -> None:
    stack.flip_every_service()
    assert "monolith" not in {b for e, b in stack.serving().items() if e != "GET /healthz"}
    done = threading.Event()

    def catch_all() -> None:  # a path no endpoint covers: the catch-all sends it to the monolith
        while not done.wait(0.05):  # all through the window, however long the CLI takes to start
            try:
                requests.get(stack.web + "/no-such-page", timeout=5)
            except requests.RequestException:
                continue  # a slow answer under load: the next one counts as well

    caller = threading.Thread(target=catch_all)
    caller.start()
    try:
        result = cli(stack, "retire", "--window", "2s")
    finally:
        done.set()
        caller.join()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "answered" in result.stderr and "--allow 0" in result.stderr
    unchanged(stack)


def test_retire_stops_the_monolith_and_the_contract_still_holds(stack: Platform) -> None:
    pid = instances(stack, "monolith")[0]["pid"]
    done = threading.Event()
    health = []

    def health_checks() -> None:  # through Traefik, all through the window: left out of the count
        while not done.wait(0.05):
            try:
                health.append(requests.get(stack.web + "/healthz", timeout=5).status_code)
            except requests.RequestException:
                continue  # a slow answer under load: the next one counts as well

    checker = threading.Thread(target=health_checks)
    checker.start()
    try:
        result = cli(stack, "retire", "--window", "2s")
    finally:
        done.set()
        checker.join()
    retired_at = time.monotonic()
    assert result.returncode == 0, result.stdout + result.stderr
    assert 200 in health
    counted = re.search(r"monolith: 0 request\(s\) in the last 2s besides health checks \((\d+) on GET /healthz",
                        result.stdout)
    assert counted and int(counted[1]) > 0, result.stdout  # health checks did arrive in the window
    assert "users: users ok" in result.stdout and "messages: messages ok" in result.stdout
    assert "monolith retired in" in result.stdout
    # its instances and the followers are gone (and stay gone: checked again at the end)
    assert instances(stack, "monolith") == []
    assert not Path(f"/proc/{pid}").exists()
    wait_for(lambda: not {"sync-users", "sync-messages"} & running(stack), 10, "the followers stopped")
    # the app answers its contract through Traefik without the monolith
    for name in CONTRACT:
        fc.run_check(name, stack.web, "")
    # write-through is off: a user registered now is only in the service's database
    user = fc.Flack(stack.web).register()
    assert user["nickname"] in nicknames(stack.run_dir / "data" / "users.sqlite")
    assert user["nickname"] not in nicknames(monolith_db(stack))
    stack.state["retired_user"] = user["nickname"]
    # status and history say so
    text = cli(stack, "status").stdout
    assert "monolith retired" in text and "the plan is done" in text
    assert "retire monolith: 0 request(s) in 2s" in stack.strangler("history").output
    again = cli(stack, "retire", "--window", "1s")
    assert again.returncode == 0 and "already retired" in again.stdout
    # at least 1.5 s (several supervisor passes) after the retirement: nothing restarted them
    wait_for(lambda: time.monotonic() - retired_at >= 1.5, 5, "1.5 s since the retirement")
    shown = status(stack)
    assert shown["retired"]["requests"] == 0 and shown["retired"]["services"] == ["users", "messages"]
    assert instances(stack, "monolith", shown) == []
    assert not {"sync-users", "sync-messages"} & running(stack, shown)


def test_scaling_the_retired_monolith_up_is_refused_with_unretire(stack: Platform) -> None:
    if Etcd(stack.state["etcd"]).get(RETIRED_KEY) is None:
        pytest.skip("needs the retire test before it")
    etcd = Etcd(stack.state["etcd"])
    before = etcd.get("strangler/stack/scale/monolith")
    result = cli(stack, "scale", "monolith=1", "users=2", timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "monolith is retired" in lines[0] and "strangler unretire" in lines[0]
    # nothing changed: neither count (one transaction refused whole), no monolith instance
    assert etcd.get("strangler/stack/scale/monolith") == before
    assert json.loads(etcd.get("strangler/stack/scale/users"))["instances"] == 1
    assert instances(stack, "monolith") == []


def test_upgrading_the_retired_monolith_is_refused_with_unretire(stack: Platform) -> None:
    """A try (or a blue/green) would start a monolith on the database its followers stopped feeding."""
    if Etcd(stack.state["etcd"]).get(RETIRED_KEY) is None:
        pytest.skip("needs the retire test before it")
    etcd = Etcd(stack.state["etcd"])
    before = (etcd.get("strangler/stack/upgrade/monolith"), etcd.get("strangler/meta/last-change"))
    for step in (["try"], ["--blue-green"]):
        result = cli(stack, "upgrade", "monolith", *step, "--release", "r-retired", "--timeout", "20", timeout=60)
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "monolith is retired" in lines[0] and "strangler unretire" in lines[0], lines
    assert (etcd.get("strangler/stack/upgrade/monolith"), etcd.get("strangler/meta/last-change")) == before
    assert instances(stack, "monolith") == []


def test_unretire_relinks_and_brings_the_monolith_back(stack: Platform) -> None:
    nickname = stack.state.get("retired_user")
    if nickname is None:
        pytest.skip("needs the retire test before it")
    result = cli(stack, "unretire")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "monolith is back in" in result.stdout
    assert unchanged(stack).get("retired") is None
    assert nickname in nicknames(monolith_db(stack))  # re-linked: what the services wrote meanwhile
    # healthy means registered in etcd: Traefik reads it from there a moment later
    wait_for(lambda: requests.get(stack.web + "/healthz", timeout=5).status_code == 200, 10,
             "the monolith's /healthz through Traefik")
    assert "monolith retired" not in cli(stack, "status").stdout
    # write-through is on again
    user = fc.Flack(stack.web).register()
    wait_for(lambda: user["nickname"] in nicknames(monolith_db(stack)), 10, "the new user in the monolith's db")
    assert "unretire monolith" in stack.strangler("history").output


def test_unretire_refuses_when_the_monolith_database_is_gone(stack: Platform) -> None:
    if cli(stack, "retire", "--window", "1s").returncode != 0:
        pytest.fail("retire again failed")
    moved = monolith_db(stack).with_suffix(".moved")
    monolith_db(stack).rename(moved)
    try:
        result = cli(stack, "unretire")
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot bring monolith back" in lines[0] and "is gone" in lines[0]
        assert Etcd(stack.state["etcd"]).get(RETIRED_KEY) is not None
        assert instances(stack, "monolith") == []
    finally:
        moved.rename(monolith_db(stack))


def test_up_of_a_retired_stack_starts_no_monolith_and_unretire_relinks(stack: Platform) -> None:
    if Etcd(stack.state["etcd"]).get(RETIRED_KEY) is None:
        pytest.skip("needs a retired stack (the test before)")
    down(stack.run_dir)
    result = subprocess.run([STRANGLER, "up", "--detach", "--plan", str(stack.plan), "--run-dir", str(stack.run_dir)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "monolith is retired: not started" in result.stdout
    assert "data:" not in result.stdout  # nothing linked, nothing caught up
    stack.state = json.loads((stack.run_dir / "state.json").read_text())
    shown = status(stack)
    assert instances(stack, "monolith", shown) == []
    assert not {n for n in processes(stack, shown) if n.startswith("sync-")}
    user = fc.Flack(stack.web).register()
    assert user["nickname"] not in nicknames(monolith_db(stack))  # no write-through either
    result = cli(stack, "unretire")
    assert result.returncode == 0, result.stdout + result.stderr
    unchanged(stack)
    assert user["nickname"] in nicknames(monolith_db(stack))
    again = fc.Flack(stack.web).register()
    wait_for(lambda: again["nickname"] in nicknames(monolith_db(stack)), 10, "write-through or the followers")
