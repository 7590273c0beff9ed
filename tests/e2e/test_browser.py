"""End to end: two headless Chromium users chat through the real monolith.

Over a WebSocket (the default), over HTTP long-polling (``?transport=polling``,
and the fallback when WebSockets are refused), with a socket that connects
late (also when what it missed shares a second with what the page knew), and
after a dropped socket. Uses Debian's /usr/bin/chromium driven by
Playwright (never a downloaded browser). Without Chromium the tests are
skipped locally and fail in CI.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from browser_pages import chromium, log_in, open_page, watch_transports
from servers import monolith_server, serving_page

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PAGE_TITLE = "Figs of the forest"
PAGE_DESCRIPTION = "Strangler figs germinate in the canopy."

# Before the page's scripts run: every WebSocket the page opens asks for a path
# the server does not serve, so its upgrade is refused (as by a proxy that
# refuses upgrades) and the browser reports an error, then a close.
REFUSE_WEBSOCKETS = """
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(url, protocols) {
    super(String(url).replace("/socket.io/", "/no-websockets-here/"), protocols);
  }
};
"""


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
    transports = watch_transports(page1)

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
    assert transports == {"websocket"}  # the default: no long-polling at all


def chat(page1, page2) -> None:
    """Two users log in on *page1* and *page2*, see each other, and one message travels live."""
    from playwright.sync_api import expect

    alice, bob = "alice" + uuid.uuid4().hex[:6], "bob" + uuid.uuid4().hex[:6]
    log_in(page1, alice, "pw-alice")
    expect(page1.locator("#connection")).to_have_text("live")
    log_in(page2, bob, "pw-bob")
    expect(page2.locator("#connection")).to_have_text("live")
    expect(page1.locator("#users")).to_contain_text(bob)
    word = uuid.uuid4().hex[:8]  # the module's tests share one server and its messages
    page2.fill("#source", f"{word} *arrived*")
    page2.click("#send")
    expect(page1.locator("#messages .message", has_text=word).locator(".body em")).to_have_text("arrived")
    page2.click("#logout")
    expect(page1.locator("#users")).not_to_contain_text(bob)


def test_what_is_typed_while_a_message_is_sending_is_kept(browser, server: str) -> None:
    """The answer to a send empties the box only if it still holds what was sent: the next
    message, typed while the first was on its way (a slow network, a busy server), stays."""
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    held: list = []
    page = browser.new_context().new_page()
    page.route("**/api/messages", lambda route: held.append(route)
               if route.request.method == "POST" and not held else route.continue_())
    page.goto(server + "/")
    log_in(page, "carol" + uuid.uuid4().hex[:6], "pw-carol")
    expect(page.locator("#chat-view")).to_be_visible()
    page.fill("#source", "first")
    page.press("#source", "Enter")
    wait_for(page, lambda: held, "the first send")
    page.fill("#source", "second, typed while the first was sending")
    held[0].continue_()
    expect(page.locator("#messages .message", has_text="first")).to_have_count(1)
    expect(page.locator("#source")).to_have_value("second, typed while the first was sending")
    page.press("#source", "Enter")
    expect(page.locator("#messages .message", has_text="second, typed")).to_have_count(1)
    expect(page.locator("#source")).to_have_value("")
    page.context.close()


def test_two_users_chat_over_long_polling(browser, server: str) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    errors: list[str] = []
    page1 = open_page(browser, server, errors, "?transport=polling")
    page2 = open_page(browser, server, errors, "?transport=polling")
    transports = [watch_transports(page1), watch_transports(page2)]
    chat(page1, page2)
    assert errors == []
    assert transports == [{"polling"}, {"polling"}]  # not one WebSocket


def test_falls_back_to_long_polling_when_websockets_are_refused(browser, server: str) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    errors: list[str] = []
    pages, transports, refused = [], [], []
    for _ in range(2):
        page = browser.new_context().new_page()
        page.add_init_script(REFUSE_WEBSOCKETS)
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("websocket", lambda ws: refused.append(ws.url) if "/no-websockets-here/" in ws.url else None)
        page.goto(server + "/")
        pages.append(page)
        transports.append(watch_transports(page))
    chat(*pages)
    assert errors == []
    assert len(refused) >= 2 and transports == [{"polling"}, {"polling"}]


def test_a_user_who_logs_in_before_the_socket_connects_shows_online(browser, server: str) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    errors: list[str] = []
    held: list = []
    page1 = browser.new_context().new_page()
    page1.on("pageerror", lambda err: errors.append(str(err)))
    # alice's WebSocket stays unanswered (a slow network) until bob is online
    page1.route_web_socket("**/socket.io/**", lambda ws: held.append(ws))
    page1.goto(server + "/")
    page2 = open_page(browser, server, errors)
    alice, bob = "alice" + uuid.uuid4().hex[:6], "bob" + uuid.uuid4().hex[:6]
    log_in(page1, alice, "pw-alice")
    expect(page1.locator("#chat-view")).to_be_visible()
    expect(page1.locator("#connection")).to_have_text("offline")
    log_in(page2, bob, "pw-bob")
    expect(page2.locator("#connection")).to_have_text("live")
    assert len(held) == 1
    held[0].connect_to_server()
    expect(page1.locator("#connection")).to_have_text("live")
    expect(page1.locator("#users")).to_contain_text(bob)  # pushed before she listened
    assert errors == []


def wait_for(page, condition, what: str, timeout: float = 10.0) -> None:
    """Let *page*'s events run until *condition()* holds; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(20)


def same_second_login(browser, server: str, errors: list[str]):
    """Alice's page learns of a new, offline bob; bob logs in; alice's socket has not connected yet.

    Returns (alice's page, bob's nickname, her held WebSocket) when bob's
    creation and his login share one second of ``updated_at`` (the tie), else None.
    """
    held_load, held_socket = [], []
    page = browser.new_context().new_page()
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.route_web_socket("**/socket.io/**", lambda ws: held_socket.append(ws))
    # only the first load waits; the rest (the socket's catch-up included) go straight through
    page.route("**/api/users", lambda route: held_load.append(route)
               if route.request.method == "GET" and not held_load else route.continue_())
    page.goto(server + "/")
    log_in(page, "alice" + uuid.uuid4().hex[:6], "pw-alice")
    wait_for(page, lambda: held_load, "alice's first load")
    while time.time() % 1 > 0.05:  # start bob's second at its beginning
        time.sleep(0.005)
    bob = "bob" + uuid.uuid4().hex[:6]
    created = requests.post(f"{server}/api/users", json={"nickname": bob, "password": "pw"}, timeout=10).json()
    held_load[0].continue_()  # alice's load, sent now, sees bob offline
    wait_for(page, lambda: held_socket, "alice's socket (after her load)")
    token = requests.post(f"{server}/api/tokens", auth=(bob, "pw"), timeout=10).json()["token"]
    seen = requests.get(f"{server}/api/users/{created['id']}", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).json()
    assert seen["online"] and not created["online"]
    return (page, bob, held_socket[0]) if seen["updated_at"] == created["updated_at"] else None


def test_a_login_in_the_second_of_the_first_load_is_caught_up(browser, server: str) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    errors: list[str] = []
    for _attempt in range(6):  # a tie needs bob's creation and login in one second
        tie = same_second_login(browser, server, errors)
        if tie:
            break
    else:
        pytest.fail("bob's creation and login never shared a second in 6 attempts")
    page, bob, socket = tie
    expect(page.locator("#users")).not_to_contain_text(bob)  # known, offline
    socket.connect_to_server()  # bob's online push is long gone: the catch-up load must show it
    expect(page.locator("#connection")).to_have_text("live")
    expect(page.locator("#users")).to_contain_text(bob)
    assert errors == []


def test_a_dropped_socket_reconnects_and_catches_up(browser, server: str) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    errors: list[str] = []
    sockets: list = []
    network = {"up": True}

    def route(ws) -> None:
        # while the network is "down", a new WebSocket stays unanswered
        sockets.append(ws)
        if network["up"]:
            ws.connect_to_server()

    page1 = browser.new_context().new_page()
    page1.on("pageerror", lambda err: errors.append(str(err)))
    page1.route_web_socket("**/socket.io/**", route)
    page1.goto(server + "/")
    page2 = open_page(browser, server, errors)
    alice, bob = "alice" + uuid.uuid4().hex[:6], "bob" + uuid.uuid4().hex[:6]
    log_in(page1, alice, "pw-alice")
    expect(page1.locator("#connection")).to_have_text("live")
    log_in(page2, bob, "pw-bob")
    expect(page1.locator("#users")).to_contain_text(bob)

    network["up"] = False
    sockets[0].close()
    expect(page1.locator("#connection")).to_have_text("reconnecting")
    word = uuid.uuid4().hex[:8]
    page2.fill("#source", f"{word} while you were away")
    page2.click("#send")
    expect(page2.locator("#messages .message", has_text=word)).to_be_visible()
    assert page1.locator("#messages .message", has_text=word).count() == 0  # nobody listened

    network["up"] = True
    for ws in sockets[1:]:
        ws.connect_to_server()
    expect(page1.locator("#connection")).to_have_text("live")
    expect(page1.locator("#messages .message", has_text=word)).to_be_visible()  # caught up
    assert errors == []
