"""End to end: the console that `strangler up` starts, in headless Chromium, against a real stack.

One stack for the module (``strangler up --detach`` of the repository's
plan on free ports). The page must list every endpoint with its owner,
show a flip made with the CLI within 2 s without a reload, undo it with its
Roll back button (recorded as ``console@<host>``), render a shadow example
side by side, and show a killed instance as not healthy. A cross-site POST
changes nothing. Screenshots go to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from browser_pages import chromium
from platform_stack import Platform, down, up
from prometheus_client.parser import text_string_to_metric_families

from strangler.compare.diff import Difference
from strangler.shadow.store import ShadowStore

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# what docs/console.md promises /metrics carries
DOCUMENTED = {
    "strangler_endpoints", "strangler_service_endpoints", "strangler_routing_changes",
    "strangler_endpoint_requests_per_second", "strangler_instances", "strangler_instance_restarts",
    "strangler_shadow_seen", "strangler_shadow_compared", "strangler_shadow_differing",
    "strangler_shadow_dropped", "strangler_shadow_skipped", "strangler_shadow_errors",
    "strangler_data_sync_lag_seconds", "strangler_data_last_pass_age_seconds", "strangler_data_collisions",
    "strangler_writethrough_rows", "strangler_console_requests",
}


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


def test_a_cli_flip_shows_within_2s_and_the_roll_back_button_undoes_it(stack: Platform, page) -> None:
    endpoint = "GET /api/users"
    stack.strangler("flip", endpoint, "--to", "users")
    flipped = time.monotonic()
    page.wait_for_function(
        """sel => { const cell = document.querySelector(sel); return cell && cell.innerText.includes('users'); }""",
        arg=f"{row(endpoint)} td.serving", timeout=2000)
    assert time.monotonic() - flipped < 2.0
    change = json.loads(stack.strangler("history", "--json").output)[-1]
    assert change["what"] == f"flip {endpoint} to users" and change["in_effect"]

    page.click(f'#history tr[data-change="{change["id"]}"] button.rollback')
    page.wait_for_selector("#message.ok", timeout=15_000)
    assert stack.serving()[endpoint] == "monolith"
    undo = json.loads(stack.strangler("history", "--json").output)[-1]
    assert undo["who"].startswith("console@") and undo["rollback_of"] == change["id"]
    page.wait_for_function(
        """sel => document.querySelector(sel).innerText.includes('monolith')""",
        arg=f"{row(endpoint)} td.serving", timeout=5000)


def test_a_refused_action_shows_the_clis_one_line(stack: Platform, page) -> None:
    history = json.loads(stack.strangler("history", "--json").output)
    page.click(f'#history tr[data-change="{history[0]["id"]}"] button.rollback')  # plan apply, touched later
    page.wait_for_selector("#message.refused", timeout=15_000)
    text = page.inner_text("#message")
    assert text.startswith("refused: ") and "\n" not in text
    assert json.loads(stack.strangler("history", "--json").output) == history


def test_a_cross_site_post_is_refused_and_changes_nothing(stack: Platform) -> None:
    before = stack.serving()
    history = stack.strangler("history", "--json").output
    console = stack.state["console"]
    for headers in ({"Origin": "http://evil.example"}, {}):
        answer = requests.post(console + "api/flip", json={"service": "users", "to": "users"},
                               headers=headers, timeout=10)
        assert answer.status_code == 403
    assert stack.serving() == before and stack.strangler("history", "--json").output == history


def test_metrics_parse_and_carry_the_documented_names(stack: Platform) -> None:
    text = requests.get(stack.state["console"] + "metrics", timeout=10).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert DOCUMENTED <= set(families), DOCUMENTED - set(families)
    endpoints = sum(s.value for s in families["strangler_endpoints"].samples)
    assert endpoints == len(stack.owners())


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


def test_a_killed_instance_shows_as_not_healthy(stack: Platform, page) -> None:
    instance = stack.state["backends"]["tokens"]["instances"][0]
    cell = f'#instances tr[data-address="{instance["url"]}"] td.health'
    assert page.inner_text(cell) == "healthy"
    os.kill(instance["pid"], signal.SIGKILL)
    page.wait_for_function("sel => document.querySelector(sel)?.innerText === 'not healthy'",
                           arg=cell, timeout=10_000)
