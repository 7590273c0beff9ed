"""`strangler compare --file session.har` on what headless Chromium recorded from Flack's chat page.

Playwright records the real page (log in, go live over a WebSocket, reload:
the reload's static files are conditional on the browser's cache). The HAR
is then replayed: WebSockets skipped and counted, only the users service's
endpoints compared by default, the rest listed, conditional headers dropped,
and every request named by its HAR entry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser_pages import chromium, log_in
from click.testing import CliRunner
from servers import monolith_server

from strangler.cli import cli

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PLAN = Path(__file__).resolve().parents[3] / "strangler.toml"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """``(HAR path, monolith URL)``: a real chat session, recorded, and the server it ran on."""
    from playwright.sync_api import expect

    tmp = tmp_path_factory.mktemp("har")
    har = tmp / "session.har"
    with monolith_server(tmp) as base, chromium() as browser:
        context = browser.new_context(record_har_path=str(har))
        page = context.new_page()
        page.goto(base + "/")
        log_in(page, "ann", "pw")
        expect(page.locator("#connection")).to_have_text("live")
        page.reload()  # static files again, now with If-None-Match / If-Modified-Since
        expect(page.locator("#connection")).to_have_text("live")
        context.close()  # writes the HAR
        yield har, base


def compare(har: Path, base: str, *args: str):
    return CliRunner().invoke(cli, ["compare", "--file", str(har), "--against", "users", "--plan", str(PLAN),
                                    "--monolith-url", base, "--candidate-url", base, *args])


def test_the_recording_has_what_the_fixes_are_about(recorded):
    entries = json.loads(recorded[0].read_text())["log"]["entries"]
    assert any(e["request"]["url"].startswith("ws://") for e in entries)
    headers = {h["name"].lower() for e in entries for h in e["request"]["headers"]}
    assert {"if-none-match", "if-modified-since"} & headers


def test_a_write_on_the_service_is_refused_naming_its_entry(recorded):
    entries = json.loads(recorded[0].read_text())["log"]["entries"]
    register = next(n for n, e in enumerate(entries, 1)
                    if e["request"]["method"] == "POST" and e["request"]["url"].endswith("/api/users"))
    result = compare(*recorded)
    assert result.exit_code == 2
    assert f"POST (entry {register}) would write twice" in result.stderr


def test_only_the_services_requests_are_compared_and_the_rest_listed(recorded):
    result = compare(*recorded, "--allow-writes")
    assert result.exit_code == 0, result.output
    assert "skipped 2 WebSocket entries" in result.output
    assert "not on users's endpoints" in result.output
    assert "  GET / (2)" in result.output and "PREFIX /static/" in result.output
    report = json.loads(compare(*recorded, "--allow-writes", "--json").stdout)
    compared = {r["endpoint"] for r in report["results"]}
    assert compared <= {"GET /api/users", "POST /api/users", "GET /api/users/<id>", "PUT /api/users/<id>"}
    assert "GET /api/users" in compared
    assert len(report["skipped"]["websockets"]) == 2
    assert {s["endpoint"] for s in report["skipped"]["elsewhere"]} >= {"GET /", "PREFIX /static/",
                                                                       "POST /api/tokens"}


def test_every_request_replays_the_reload_without_its_cache_conditions(recorded):
    report = json.loads(compare(*recorded, "--allow-writes", "--every-request", "--json").stdout)
    statics = [r for r in report["results"] if r["endpoint"] == "PREFIX /static/"]
    assert len(statics) >= 6  # three files, twice
    assert {r["left"]["status"] for r in statics} == {200}  # never a bodiless 304
    assert report["skipped"]["elsewhere"] == []
