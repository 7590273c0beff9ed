"""Headless Chromium for the browser tests: launching it and driving Flack's page.

Uses Debian's /usr/bin/chromium under Playwright (never a downloaded
browser). Importable as ``browser_pages`` from every test (see ``servers``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium() -> Iterator[Any]:
    """Yield a launched headless Chromium; skip the test without it (fail it when CI is set)."""
    import pytest

    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing; install it with `apt-get install chromium`"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, base: str, errors: list[str], query: str = "") -> Any:
    """A page in its own browser context (own storage), recording script errors.

    *query* is appended to the page's URL (``"?transport=polling"``, say).
    """
    page = browser.new_context().new_page()
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(base + "/" + query)
    return page


def watch_transports(page: Any) -> set[str]:
    """The Engine.IO transports *page* uses from now on, filled in as it opens them.

    ``"websocket"`` for each WebSocket to ``/socket.io/``, ``"polling"`` for each
    long-polling request there (what the browser did, not what the page asked for).
    """
    seen: set[str] = set()
    page.on("websocket", lambda ws: seen.add("websocket") if "/socket.io/" in ws.url else None)
    page.on("request", lambda request: seen.add("polling")
            if "/socket.io/" in request.url and "transport=polling" in request.url else None)
    return seen


def log_in(page: Any, nickname: str, password: str) -> None:
    """Fill in Flack's login form and submit it."""
    page.fill("#nickname", nickname)
    page.fill("#password", password)
    page.click("#login")
