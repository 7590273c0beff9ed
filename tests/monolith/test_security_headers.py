"""The page's security headers (monolith.main), from the monolith and the ui service over real HTTP."""

from __future__ import annotations

import pytest
import requests
from servers import serving

pytestmark = pytest.mark.integration

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")


def settings(tmp_path) -> dict:
    return {"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'flack.sqlite'}"}


def check_page(base: str) -> None:
    page = requests.get(f"{base}/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == CSP
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    # the page keeps to the policy: no inline script or style, only its own files
    assert "<script>" not in page.text and "style=" not in page.text
    for asset in ("app.js", "vendor/socket.io-client/socket.io.min.js", "style.css"):
        served = requests.get(f"{base}/static/{asset}", timeout=10)
        assert served.status_code == 200 and served.headers["X-Content-Type-Options"] == "nosniff"


def test_the_monolith_sends_them_on_its_page(tmp_path):
    from monolith import create_app

    app = create_app(settings(tmp_path))
    with serving(app) as base:
        check_page(base)
        api = requests.get(f"{base}/api/users", timeout=10)
        assert api.headers["X-Content-Type-Options"] == "nosniff"
        assert "Content-Security-Policy" not in api.headers  # JSON is not a page
        missing = requests.get(f"{base}/nowhere", headers={"Accept": "text/html"}, timeout=10)
        assert missing.status_code == 404 and missing.headers["X-Frame-Options"] == "DENY"
    app.extensions["link_expander"].shutdown(wait=True)


def test_the_ui_service_sends_the_same(tmp_path):
    from extracted.ui import create_app

    with serving(create_app(settings(tmp_path))) as base:
        check_page(base)
