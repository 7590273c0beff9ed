"""End to end: the console that `strangler up` starts, in headless Chromium, against a real stack.

One stack for the module (``strangler up --detach`` of the repository's
plan on free ports). The page must list every endpoint with its owner,
show a flip made with the CLI within 2 s without a reload, undo it with its
Roll back button (recorded as ``console@<host>``), start and abort a
promotion (recorded the same way), render a shadow example side by side,
update by server-sent events (a page beyond the streams polls), and show a
killed instance as not healthy. A cross-site POST changes nothing. The
followers' and the supervisor's own /metrics are scraped over HTTP, and
through the console's. Screenshots go to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from browser_pages import chromium
from platform_stack import STRANGLER, Platform, down, up
from prometheus_client.parser import text_string_to_metric_families

from strangler.compare.diff import Difference
from strangler.shadow.store import ShadowStore

pytestmark = [pytest.mark.integration, pytest.mark.browser]



def documented_metrics() -> set[str]:
    """The names docs/console.md's /metrics table promises (its first column, {a,b} expanded;
    counters without _total, as the parser names their families)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "console.md").read_text()
    table = text.split("## Metrics: `GET /metrics`")[1].split("###")[0]
    names = set()
    for cell in re.findall(r"^\| `(strangler_[^`]+)` \|", table, re.M):
        head, _, rest = cell.partition("{")
        choices, _, tail = rest.partition("}")
        for choice in choices.split(",") if rest else [""]:
            names.add((head + choice + tail).removesuffix("_total"))
    return names


DOCUMENTED = documented_metrics()


def documented_own_metrics() -> set[str]:
    """The names docs/console.md promises for the followers' and the supervisor's own /metrics."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "console.md").read_text()
    table = text.split("### The followers' and the supervisor's own")[1].split("###")[0]
    return {cell for cell in re.findall(r"^\| `(strangler_[^`{]+)` \|", table, re.M)}


DOCUMENTED_OWN = documented_own_metrics()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = up(tmp_path_factory.mktemp("console"))
    try:
        yield platform
    finally:
        down(platform.run_dir)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser, stack: Platform, tmp_path: Path) -> Iterator:
    """The console page at 1280x800, loaded; a screenshot of it lands in tmp_path at the end."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(stack.state["console"])
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    yield page
    page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
    context.close()
    assert errors == []


def row(endpoint: str) -> str:
    return f'#routes tr[data-endpoint="{endpoint}"]'


def test_up_prints_the_console_and_it_serves_on_loopback(stack: Platform) -> None:
    assert stack.state["console"].startswith("http://127.0.0.1:")
    assert requests.get(stack.state["console"] + "healthz", timeout=5).json() == {"status": "ok"}


def test_the_page_lists_every_endpoint_with_its_owner(stack: Platform, page) -> None:
    owners = stack.owners()
    assert len(owners) > 10
    for endpoint, owner in owners.items():
        assert page.inner_text(f"{row(endpoint)} td.owner") == (owner or "-"), endpoint
    assert page.locator("#progress .progress-row").count() == 5  # users tokens messages socketio ui


def test_a_narrow_window_scrolls_tables_not_the_page(stack: Platform, page, tmp_path: Path) -> None:
    page.set_viewport_size({"width": 420, "height": 800})
    page.screenshot(path=str(tmp_path / "console-narrow.png"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    assert page.locator("#routes").is_visible()


def test_a_cli_flip_shows_within_2s_and_the_roll_back_button_undoes_it(stack: Platform, page) -> None:
    endpoint = "GET /api/users"
    stack.strangler("flip", endpoint, "--to", "users")
    flipped = time.monotonic()
    page.wait_for_function(
        """sel => { const cell = document.querySelector(sel); return cell && cell.innerText.includes('users'); }""",
        arg=f"{row(endpoint)} td.serving", timeout=2000)
    assert time.monotonic() - flipped < 2.0
    change = json.loads(stack.strangler("history", "--json").stdout)[-1]
    assert change["what"] == f"flip {endpoint} to users" and change["in_effect"]

    page.click(f'#history tr[data-change="{change["id"]}"] button.rollback')
    page.wait_for_selector("#message.ok", timeout=15_000)
    assert stack.serving()[endpoint] == "monolith"
    undo = json.loads(stack.strangler("history", "--json").stdout)[-1]
    assert undo["who"].startswith("console@") and undo["rollback_of"] == change["id"]
    page.wait_for_function(
        """sel => document.querySelector(sel).innerText.includes('monolith')""",
        arg=f"{row(endpoint)} td.serving", timeout=5000)


def open_console(browser, stack: Platform):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(stack.state["console"])
    page.wait_for_selector("body[data-ready='1'][data-live]", timeout=10_000)
    return context, page


def test_updates_come_as_events_and_a_page_beyond_the_streams_polls(stack: Platform, browser) -> None:
    """Two live streams at once (four gunicorn threads, two kept for actions and /metrics): a third
    page is refused one (503) and polls; both kinds show a CLI flip within 2 s without a reload."""
    opened, streaming = [], []
    try:
        deadline = time.monotonic() + 20
        while len(streaming) < 2:  # a page closed by an earlier test frees its stream at its next write
            context, page = open_console(browser, stack)
            opened.append(context)
            if page.evaluate("document.body.dataset.live") == "events":
                streaming.append(page)
                continue
            context.close()
            opened.remove(context)
            assert time.monotonic() < deadline, f"only {len(streaming)} of 2 pages ever got a live stream"
            time.sleep(0.5)
        live = streaming[0]
        context, polling = open_console(browser, stack)  # both streams are this test's own now
        opened.append(context)
        assert polling.evaluate("document.body.dataset.live") == "polling"
        endpoint = "GET /api/users"
        assert stack.serving()[endpoint] == "monolith"
        stack.strangler("flip", endpoint, "--to", "users")
        flipped = time.monotonic()
        try:
            for page in (live, polling):
                page.wait_for_function(
                    """sel => (document.querySelector(sel)?.innerText || '').includes('users')""",
                    arg=f"{row(endpoint)} td.serving", timeout=2000)
            assert time.monotonic() - flipped < 2.0
            assert live.evaluate("document.body.dataset.live") == "events"
        finally:
            stack.strangler("rollback")
    finally:
        for context in opened:
            context.close()


def test_a_refused_action_shows_the_clis_one_line(stack: Platform, page) -> None:
    history = json.loads(stack.strangler("history", "--json").stdout)
    page.click(f'#history tr[data-change="{history[0]["id"]}"] button.rollback')  # plan apply, touched later
    page.wait_for_selector("#message.refused", timeout=15_000)
    text = page.inner_text("#message")
    assert text.startswith("refused: ") and "\n" not in text
    assert json.loads(stack.strangler("history", "--json").stdout) == history


def test_a_cross_site_post_is_refused_and_changes_nothing(stack: Platform) -> None:
    before = stack.serving()
    history = stack.strangler("history", "--json").output
    console = stack.state["console"]
    with requests.Session() as browser:  # a session that holds a real token: only the Origin is foreign
        page = browser.get(console, timeout=10)
        token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        foreign = browser.post(console + "api/flip", json={"service": "users", "to": "users"},
                               headers={"Origin": "http://evil.example", "X-CSRF-Token": token}, timeout=10)
        assert foreign.status_code == 403 and "cross-site" in foreign.json()["error"]
    tokenless = requests.post(console + "api/flip", json={"service": "users", "to": "users"}, timeout=10)
    assert tokenless.status_code == 403 and "CSRF" in tokenless.json()["error"]
    assert stack.serving() == before and stack.strangler("history", "--json").output == history


def test_metrics_parse_and_carry_the_documented_names(stack: Platform) -> None:
    text = requests.get(stack.state["console"] + "metrics", timeout=10).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert DOCUMENTED <= set(families), DOCUMENTED - set(families)
    endpoints = sum(s.value for s in families["strangler_endpoints"].samples)
    assert endpoints == len(stack.owners())
    comparator = requests.get(stack.instance("comparator") + "/_shadow/metrics", timeout=10)
    names = {family.name for family in text_string_to_metric_families(comparator.text)}
    assert {"strangler_comparator_seen", "strangler_comparator_queue_length"} <= names


def test_a_shadow_example_renders_side_by_side(stack: Platform, page) -> None:
    # what the comparator writes when the candidate differs, through its own store
    store = ShadowStore(stack.run_dir / "shadow.sqlite")
    found = [Difference("nickname", "nickname", "changed", "susan", "SUSAN")]
    store.comparison("GET /api/users/<id>", "users", found, {
        "request": {"method": "GET", "target": "/api/users/1", "body": ""},
        "monolith": {"status": 200, "headers": {}, "body": '{"id": 1, "nickname": "susan"}'},
        "candidate": {"status": 200, "headers": {}, "body": '{"id": 1, "nickname": "SUSAN"}'},
        "differences": [d.to_dict() for d in found]})
    store.flush()
    block = '#diffs .diff[data-endpoint="GET /api/users/<id>"]'
    page.wait_for_selector(f"{block} .example button", timeout=10_000)
    page.click(f"{block} .example button")
    marked = page.locator(f"{block} table.sbs tr.real")
    marked.first.wait_for(timeout=5000)
    assert '"susan"' in marked.first.locator("td.l").inner_text()
    assert '"SUSAN"' in marked.first.locator("td.r").inner_text()


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Running:
    """A ``strangler`` command running in a pseudo-terminal-like mode (FORCE_COLOR: Rich redraws live)."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "200"}
        self.proc = subprocess.Popen([STRANGLER, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env)
        self.chunks: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(65536):
            self.chunks.append(chunk)

    def text(self) -> str:
        return ANSI.sub("", b"".join(self.chunks).decode("utf-8", "replace"))

    def wait_for(self, pattern: str, timeout: float = 15.0, since: int = 0) -> int:
        """Wait until ``pattern`` (a regex) shows in the output after offset ``since``; its end offset."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern).search(self.text(), since)
            if found:
                return found.end()
            assert time.monotonic() < deadline, f"{pattern!r} never showed: {self.text()[-2000:]}"
            assert self.proc.poll() is None, f"ended with {self.proc.returncode}: {self.text()[-2000:]}"
            time.sleep(0.05)

    def interrupt(self) -> int:
        """Ctrl-C; the exit status (if it has not ended 10 s later: killed, and the test fails)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # never left running after the test
            self.proc.wait()
            raise


def test_status_and_routes_watch_redraw_until_ctrl_c(stack: Platform) -> None:
    status = Running("status", "--watch", "--interval", "0.3", "--plan", str(stack.plan))
    routes = Running("routes", "--watch", "--interval", "0.3", "--plan", str(stack.plan))
    try:
        seen_status = status.wait_for(r"tokens\.0|127\.0\.0\.1")
        seen_routes = routes.wait_for(r"/api/messages/<id>\s*│\s*monolith")
        stack.strangler("flip", "GET /api/messages/<id>", "--to", "messages")
        routes.wait_for(r"/api/messages/<id>\s*│\s*messages\s*│\s*flipped", since=seen_routes)
        status.wait_for(r"messages\s*│\s*flipped\s*│\s*1", since=seen_status)
    finally:
        codes = (status.interrupt(), routes.interrupt())
        stack.strangler("rollback")
    assert codes == (0, 0)
    assert "Traceback" not in status.text() + routes.text()


def test_logs_merge_every_process_and_follow(stack: Platform) -> None:
    run_dir = str(stack.run_dir)
    merged = subprocess.run([STRANGLER, "logs", "--run-dir", run_dir, "--since", "1h", "-n", "100000"],
                            capture_output=True, text=True, timeout=30)
    assert merged.returncode == 0, merged.stderr
    prefixes = {line.split("|")[0].strip() for line in merged.stdout.splitlines()}
    assert {"etcd", "traefik", "redis"} <= prefixes and "traefik-access" not in prefixes
    unknown = subprocess.run([STRANGLER, "logs", "nosuch", "--run-dir", run_dir],
                             capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "processes with logs" in unknown.stderr
    bad = subprocess.run([STRANGLER, "logs", "--since", "soon", "--run-dir", run_dir],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "like 30s, 5m" in bad.stderr
    access = Running("logs", "traefik-access", "-f", "-n", "1", "--run-dir", run_dir)
    try:
        marker = f"follow-{time.time_ns()}"
        requests.get(f"{stack.web}/api/users?{marker}", timeout=10)
        access.wait_for(rf"traefik-access \| .*{marker}")
    finally:
        assert access.interrupt() == 0


def promotions(stack: Platform) -> dict[int, dict]:
    return {p["id"]: p for p in json.loads(stack.strangler("promotions", "--json").stdout)}


def test_a_promotion_starts_and_aborts_from_the_page_as_console(stack: Platform, page) -> None:
    endpoint = "GET /api/users/<id>"
    assert stack.serving()[endpoint] == "monolith"
    page.click(f"{row(endpoint)} button.promote")
    page.wait_for_selector("#message.ok", timeout=15_000)
    started = page.inner_text("#message")
    promotion_id = int(re.match(r"promotion (\d+): ", started)[1])
    assert f"{endpoint} to users, steps 5,25,50,100%" in started
    # the row offers to abort it, the promotions table lists it, the CLI sees who started it
    page.wait_for_selector(f"{row(endpoint)} button.abort", timeout=5000)
    stored = promotions(stack)[promotion_id]
    assert stored["who"].startswith("console@") and stored["endpoints"] == [endpoint]
    # the controller sets the first step: its change is recorded as the console's
    deadline = time.monotonic() + 15
    while not any(c["what"].startswith(f"promotion {promotion_id}: ")
                  for c in json.loads(stack.strangler("history", "--json").stdout)):
        assert time.monotonic() < deadline, "the controller never set the first step"
        time.sleep(0.2)
    steps = [c for c in json.loads(stack.strangler("history", "--json").stdout)
             if c["what"].startswith(f"promotion {promotion_id}: ")]
    assert all(c["who"].startswith("console@") for c in steps), steps
    # a second one on the same endpoint: the CLI's refusal, on one line, on the page
    known = promotions(stack)
    page.evaluate("spec => promote(spec, 'users', null)", endpoint)
    page.wait_for_selector("#message.refused", timeout=15_000)
    refused = page.inner_text("#message")
    assert f"promotion {promotion_id} is running on these endpoints" in refused and "\n" not in refused
    assert promotions(stack).keys() == known.keys()  # nothing new stored

    page.click(f'#promotions tr[data-promotion="{promotion_id}"] button.abort')
    page.wait_for_selector("#message.ok", timeout=15_000)
    assert "abort asked" in page.inner_text("#message")
    page.wait_for_function(
        """sel => (document.querySelector(sel)?.innerText || '').includes('rolled back')""",
        arg=f'#promotions tr[data-promotion="{promotion_id}"] td.state', timeout=20_000)
    ended = promotions(stack)[promotion_id]
    assert ended["state"] == "rolled back" and ended["abort"].startswith("console@")
    assert stack.serving()[endpoint] == "monolith"
    page.wait_for_selector(f"{row(endpoint)} button.promote", timeout=5000)


def test_a_cross_site_promotion_is_refused_and_stores_nothing(stack: Platform) -> None:
    before = promotions(stack)
    console = stack.state["console"]
    with requests.Session() as browser:
        page = browser.get(console, timeout=10)
        token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        for path, body in (("api/promote", {"service": "users", "to": "users"}),
                           ("api/promotions/abort", {"service": "users"})):
            foreign = browser.post(console + path, json=body, timeout=10,
                                   headers={"Origin": "http://evil.example", "X-CSRF-Token": token})
            assert foreign.status_code == 403 and "cross-site" in foreign.json()["error"]
            tokenless = requests.post(console + path, json=body, timeout=10)
            assert tokenless.status_code == 403 and "CSRF" in tokenless.json()["error"]
    assert promotions(stack) == before


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text at ``url``, parsed by prometheus-client: (sample name, sorted labels) -> value."""
    text = requests.get(url, timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_followers_and_the_supervisor_serve_their_own_metrics_and_the_console_relays_them(
        stack: Platform) -> None:
    state = json.loads((stack.run_dir / "state.json").read_text())
    follower = state["data"]["users"]["metrics"]
    supervisor = state["supervisor_metrics"]
    assert follower.startswith("http://127.0.0.1:") and supervisor.startswith("http://127.0.0.1:")
    names = {name for name, _ in scrape(follower)} | {name for name, _ in scrape(supervisor)}
    own = DOCUMENTED_OWN - {"strangler_console_relay_up"}  # the console's, relaying them
    assert own <= names, own - names
    forward = (("direction", "monolith -> users"), ("service", "users"))
    # a follower killed: the supervisor restarts it, counts it, and it serves on the same port again
    pid = next(p["pid"] for p in json.loads((stack.run_dir / "supervisor.json").read_text())["processes"].values()
               if p["name"] == "sync-users")
    os.kill(pid, signal.SIGKILL)
    restarted = ("strangler_supervisor_restarts_total", (("backend", ""), ("process", "sync-users")))
    deadline = time.monotonic() + 20
    while scrape(supervisor).get(restarted, 0) < 1:
        assert time.monotonic() < deadline, "the supervisor never counted the restart"
        time.sleep(0.2)
    while True:
        try:
            if scrape(follower).get(("strangler_sync_passes_total", (forward[0], ("result", "ok"), forward[1]))):
                break
        except requests.RequestException:
            pass  # not listening yet
        assert time.monotonic() < deadline, "the restarted follower never served a good pass"
        time.sleep(0.2)
    ended = {p["state"] for p in json.loads(stack.strangler("promotions", "--json").stdout)}
    by_state = scrape(supervisor)
    for state_ in ("running", "promoted", "rolled back"):
        assert (by_state[("strangler_promotions", (("state", state_),))] > 0) == (state_ in ended), state_
    # one target for everything: the console's /metrics carries them, each family once
    text = requests.get(stack.state["console"] + "metrics", timeout=10).text
    relayed = scrape(stack.state["console"] + "metrics")
    assert relayed[restarted] >= 1
    assert relayed[("strangler_console_relay_up", (("target", "supervisor"),))] == 1
    assert relayed[("strangler_console_relay_up", (("target", "sync-users"),))] == 1
    assert relayed[("strangler_sync_lag_seconds", (("direction", "messages -> monolith"), ("service", "messages")))] >= 0
    assert text.count("# TYPE strangler_sync_rows_total counter") == 1


def test_a_killed_instance_shows_as_not_healthy(stack: Platform, page) -> None:
    instance = stack.state["backends"]["tokens"]["instances"][0]
    cell = f'#instances tr[data-address="{instance["url"]}"] td.health'
    assert page.inner_text(cell) == "healthy"
    os.kill(instance["pid"], signal.SIGKILL)
    page.wait_for_function("sel => document.querySelector(sel)?.innerText === 'not healthy'",
                           arg=cell, timeout=10_000)
