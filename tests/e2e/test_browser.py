"""End to end: two headless Chromium users chat through the real monolith.

Uses Debian's /usr/bin/chromium driven by Playwright (never a downloaded
browser). Without Chromium the test is skipped locally and fails in CI.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGE_TITLE = "Figs of the forest"
PAGE_DESCRIPTION = "Strangler figs germinate in the canopy."


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `strangler monolith` on a free port and a temporary SQLite file."""
    tmp = tmp_path_factory.mktemp("e2e")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SOCKETIO_MESSAGE_QUEUE")}
    env["STRANGLER_DATA_DIR"] = str(tmp)
    cmd = [str(Path(sys.executable).parent / "strangler"), "monolith", "--host", "127.0.0.1",
           "--port", str(port), "--database", f"sqlite:///{tmp}/m.sqlite"]
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 40
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        yield base
    finally:
        # stop our own process group by its id (the server and any workers)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@pytest.fixture(scope="module")
def linked_page() -> Iterator[str]:
    """A local page the server can fetch to expand a link in a message."""
    body = (f"<html><head><title>{PAGE_TITLE}</title>"
            f'<meta name="description" content="{PAGE_DESCRIPTION}"></head>'
            "<body>figs</body></html>").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/figs.html"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium under Playwright."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing; install it with `apt-get install chromium`"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, base: str, errors: list[str]):
    """A page in its own browser context (own storage), recording script errors."""
    page = browser.new_context().new_page()
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(base + "/")
    return page


def log_in(page, nickname: str, password: str) -> None:
    page.fill("#nickname", nickname)
    page.fill("#password", password)
    page.click("#login")


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
