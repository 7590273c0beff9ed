"""End to end: two headless Chromium users chat through Traefik on the fully extracted stack.

Its own stack (`strangler.stack.lifecycle.Stack` from a big-bang copy of the plan on
free ports), one ``strangler cutover --all``, then the unchanged browser
client: register on two pages, see each other online, post, and see the
message (markdown rendered, link expanded) live on the other page, over
WebSockets and again over HTTP long-polling (``?transport=polling``). Traefik's
access log proves no request of the session reached the monolith.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_pages import chromium, log_in, open_page, watch_transports
from click.testing import CliRunner

# the page link expansion fetches is shared with the contract suite (not a package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
import flack_contract as fc  # noqa: E402

from strangler.cli import cli  # noqa: E402
from strangler.plan import load_plan  # noqa: E402
from strangler.stack.lifecycle import (
    Stack,  # noqa: E402
    procs,  # noqa: E402
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium under Playwright (skipped without it, unless CI is set)."""
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def extracted(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A stack on free ports with every endpoint cut over to its service; its state.json."""
    base = tmp_path_factory.mktemp("extracted")
    text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", (REPO / "strangler.toml").read_text(), flags=re.M)
    plan_path = base / "strangler.toml"
    plan_path.write_text(re.sub(r'^strategy = "[^"]*"', 'strategy = "big-bang"', text, flags=re.M))
    run_dir = base / "run"
    stack = Stack(load_plan(plan_path), run_dir)
    # every backend inherits the opt-in: the linked test page is on 127.0.0.1
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LINK_EXPANSION_ALLOW_PRIVATE", "true")
        try:
            state = stack.up()
            result = CliRunner().invoke(cli, ["cutover", "--all", "--plan", str(plan_path), "--etcd", state["etcd"],
                                              "--traefik-api", state["traefik_api"]])
            assert result.exit_code == 0, result.output
            rows = json.loads(CliRunner().invoke(cli, ["routes", "--json", "--plan", str(plan_path), "--etcd",
                                                       state["etcd"]]).output)
            assert {row["backend"] for row in rows if row["path"] != "/healthz"} == {
                "users", "tokens", "messages", "socketio", "ui"}
            yield state
        finally:
            stack.stop()
            for record in procs.read_pidfiles(run_dir).values():  # only if stop missed one
                record.stop()


def served(state: dict) -> dict[str, set[str]]:
    """Traefik service names that answered each kind of path, from the access log."""
    seen: dict[str, set[str]] = {}
    for line in (Path(state["run_dir"]) / "logs" / "traefik-access.log").read_text().splitlines():
        entry = json.loads(line)
        path = entry["RequestPath"]
        kind = next((p for p in ("/api/users", "/api/tokens", "/api/messages", "/socket.io/", "/static/")
                     if path.startswith(p)), path.split("?")[0])
        seen.setdefault(kind, set()).add(entry.get("ServiceName", "").removesuffix("@etcd"))
    return seen


def test_two_users_chat_live_through_the_services(browser, extracted: dict) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    web = extracted["web"]
    errors: list[str] = []
    alice, bob = "alice" + uuid.uuid4().hex[:6], "bob" + uuid.uuid4().hex[:6]
    with fc.linked_page() as linked:
        page1, page2 = open_page(browser, web, errors), open_page(browser, web, errors)
        transports = watch_transports(page1)
        expect(page1.locator("#login-form")).to_be_visible()
        log_in(page1, alice, "pw-alice")
        expect(page1.locator("#me")).to_have_text(alice)
        expect(page1.locator("#connection")).to_have_text("live")

        log_in(page2, alice, "not-her-password")
        expect(page2.locator("#error")).to_contain_text("wrong password")
        log_in(page2, bob, "pw-bob")
        expect(page2.locator("#connection")).to_have_text("live")
        expect(page1.locator("#users")).to_contain_text(bob)
        expect(page2.locator("#users")).to_contain_text(alice)

        page1.fill("#source", "hello *world*")
        page1.click("#send")
        message = page2.locator("#messages .message", has_text="hello")
        expect(message.locator(".body em")).to_have_text("world")
        expect(message.locator(".author")).to_have_text(alice)

        page2.fill("#source", f"read {linked}")
        page2.press("#source", "Enter")
        quote = page1.locator("#messages .message", has_text="read").locator("blockquote")
        expect(quote).to_contain_text(fc.PAGE_TITLE)
        expect(quote).to_contain_text(fc.PAGE_DESCRIPTION)

        page2.click("#logout")
        expect(page2.locator("#login-form")).to_be_visible()
        expect(page1.locator("#users")).not_to_contain_text(bob)
    assert errors == [] and transports == {"websocket"}
    answered = served(extracted)
    assert answered["/"] == {"ui"} and answered["/static/"] == {"ui"}
    assert answered["/socket.io/"] == {"socketio"}
    assert answered["/api/users"] == {"users"} and answered["/api/tokens"] == {"tokens"}
    assert answered["/api/messages"] == {"messages"}


def test_two_users_chat_over_long_polling_through_the_services(browser, extracted: dict) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    web = extracted["web"]
    errors: list[str] = []
    alice, bob = "alice" + uuid.uuid4().hex[:6], "bob" + uuid.uuid4().hex[:6]
    page1 = open_page(browser, web, errors, "?transport=polling")
    page2 = open_page(browser, web, errors, "?transport=polling")
    transports = [watch_transports(page1), watch_transports(page2)]
    log_in(page1, alice, "pw-alice")
    expect(page1.locator("#connection")).to_have_text("live")
    log_in(page2, bob, "pw-bob")
    expect(page2.locator("#connection")).to_have_text("live")
    expect(page1.locator("#users")).to_contain_text(bob)

    word = uuid.uuid4().hex[:8]
    page1.fill("#source", f"{word} *polled*")
    page1.click("#send")
    expect(page2.locator("#messages .message", has_text=word).locator(".body em")).to_have_text("polled")
    page2.click("#logout")
    expect(page1.locator("#users")).not_to_contain_text(bob)
    assert errors == [] and transports == [{"polling"}, {"polling"}]
    assert polls_answered(extracted) == {"socketio"}


def polls_answered(state: dict) -> set[str]:
    """Traefik service names that answered Socket.IO long-polling requests, from the access log."""
    services = set()
    for line in (Path(state["run_dir"]) / "logs" / "traefik-access.log").read_text().splitlines():
        entry = json.loads(line)
        if entry["RequestPath"].startswith("/socket.io/") and "transport=polling" in entry["RequestPath"]:
            services.add(entry.get("ServiceName", "").removesuffix("@etcd"))
    return services
