"""The chat works in Chromium under the page's Content-Security-Policy, with nothing blocked.

A real ``strangler monolith``; the page is loaded, two users log in (the
socket goes live, over a WebSocket and over long-polling), a message with
markdown and a link travels between them, and the page's own stylesheet
applies. Every CSP violation the browser
reports (``securitypolicyviolation`` events and console errors) fails the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from browser_pages import chromium, log_in, watch_transports
from servers import monolith_server

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# registered before any of the page's scripts run (the DevTools protocol is not subject to CSP)
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `strangler monolith` on a free port and a temporary SQLite file."""
    with monolith_server(tmp_path_factory.mktemp("csp")) as base:
        yield base


def open_recorded(browser, base: str, problems: list[str], query: str = ""):
    """A page of its own that records script errors and CSP complaints in *problems*."""
    page = browser.new_context().new_page()
    page.add_init_script(RECORD_VIOLATIONS)
    page.on("pageerror", lambda err: problems.append(f"script error: {err}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if "Content Security Policy" in msg.text else None)
    response = page.goto(base + "/" + query)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    return page


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_the_chat_works_under_the_policy(server: str, transport: str) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    problems: list[str] = []
    query = f"?transport={transport}"
    with chromium() as browser:
        alice, bob = "alice" + uuid.uuid4().hex[:6], "bob" + uuid.uuid4().hex[:6]
        page1 = open_recorded(browser, server, problems, query)
        page2 = open_recorded(browser, server, problems, query)
        transports = watch_transports(page1)
        # the stylesheet applied: the top bar is laid out by style.css
        assert page1.eval_on_selector(".topbar", "e => getComputedStyle(e).display") == "flex"
        log_in(page1, alice, "pw-alice")
        log_in(page2, bob, "pw-bob")
        expect(page1.locator("#connection")).to_have_text("live")  # the socket's requests are allowed
        expect(page2.locator("#connection")).to_have_text("live")
        expect(page1.locator("#users")).to_contain_text(bob)

        word = uuid.uuid4().hex[:8]  # both runs share the server and its messages
        page1.fill("#source", f"{word} *policy* see [this](https://example.invalid/x)")
        page1.click("#send")
        message = page2.locator("#messages .message", has_text=word)
        expect(message.locator(".body em")).to_have_text("policy")
        expect(message.locator(".body a")).to_have_attribute("href", "https://example.invalid/x")
        violations = page1.evaluate("window.__violations") + page2.evaluate("window.__violations")
    assert violations == [] and problems == []
    assert transports == {transport}
