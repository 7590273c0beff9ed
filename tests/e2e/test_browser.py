"""End to end: two headless Chromium users chat through the real monolith.

Uses Debian's /usr/bin/chromium driven by Playwright (never a downloaded
browser). Without Chromium the test is skipped locally and fails in CI.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from browser_pages import chromium, log_in, open_page
from servers import monolith_server, serving_page

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PAGE_TITLE = "Figs of the forest"
PAGE_DESCRIPTION = "Strangler figs germinate in the canopy."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `strangler monolith` on a free port and a temporary SQLite file."""
    # the linked page is on 127.0.0.1: opt in to previews of private addresses
    with monolith_server(tmp_path_factory.mktemp("e2e"), LINK_EXPANSION_ALLOW_PRIVATE="true") as base:
        yield base


@pytest.fixture(scope="module")
def linked_page() -> Iterator[str]:
    """A local page the server can fetch to expand a link in a message."""
    body = (f"<html><head><title>{PAGE_TITLE}</title>"
            f'<meta name="description" content="{PAGE_DESCRIPTION}"></head>'
            "<body>figs</body></html>").encode()
    with serving_page(body, "/figs.html") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium under Playwright (skipped without it, unless CI is set)."""
    with chromium() as launched:
        yield launched


def test_two_users_chat_live(browser, server: str, linked_page: str) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    errors: list[str] = []
    alice, bob = "alice" + uuid.uuid4().hex[:6], "bob" + uuid.uuid4().hex[:6]
    page1 = open_page(browser, server, errors)
    page2 = open_page(browser, server, errors)

    # the empty page is readable and shows the login form only
    expect(page1.locator("#login-form")).to_be_visible()
    expect(page1.locator("#chat-view")).to_be_hidden()

    log_in(page1, alice, "pw-alice")
    expect(page1.locator("#chat-view")).to_be_visible()
    expect(page1.locator("#me")).to_have_text(alice)
    expect(page1.locator("#connection")).to_have_text("live")

    # a wrong password for an existing nickname is reported in the page
    log_in(page2, alice, "not-her-password")
    expect(page2.locator("#error")).to_be_visible()
    expect(page2.locator("#error")).to_contain_text("wrong password")
    expect(page2.locator("#chat-view")).to_be_hidden()

    log_in(page2, bob, "pw-bob")
    expect(page2.locator("#connection")).to_have_text("live")
    expect(page2.locator("#error")).to_be_hidden()
    # both see each other online; alice learns of bob live
    expect(page1.locator("#users")).to_contain_text(bob)
    expect(page2.locator("#users")).to_contain_text(alice)

    page1.fill("#source", "hello *world*")
    page1.click("#send")
    message = page2.locator("#messages .message", has_text="hello")
    expect(message.locator(".body em")).to_have_text("world")
    expect(message.locator(".author")).to_have_text(alice)

    page1.fill("#source", f"read {linked_page}")
    page1.press("#source", "Enter")
    quote = page2.locator("#messages .message", has_text="read").locator("blockquote")
    expect(quote).to_contain_text(PAGE_TITLE)
    expect(quote).to_contain_text(PAGE_DESCRIPTION)
    expect(page1.locator("#messages blockquote")).to_contain_text(PAGE_TITLE)

    # logging out takes bob off alice's online list
    page2.click("#logout")
    expect(page2.locator("#login-form")).to_be_visible()
    expect(page1.locator("#users")).not_to_contain_text(bob)

    # a reload keeps the session (the token lives in sessionStorage) and the history
    page1.reload()
    expect(page1.locator("#me")).to_have_text(alice)
    expect(page1.locator("#connection")).to_have_text("live")
    expect(page1.locator("#messages .body em")).to_have_text("world")
    assert errors == []
