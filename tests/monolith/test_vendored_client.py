"""The vendored browser Socket.IO client: what the page loads, its version, and its packaging."""

from __future__ import annotations

import glob
import re
import tomllib
from pathlib import Path

from setuptools import find_namespace_packages

import monolith

REPO = Path(__file__).resolve().parents[2]
STATIC = Path(monolith.__file__).parent / "static"
VENDORED = STATIC / "vendor" / "socket.io-client"


def test_the_vendored_client_is_one_4x_release_with_its_licence():
    version = (VENDORED / "VERSION").read_text().strip()
    assert re.fullmatch(r"4\.\d+\.\d+", version)
    script = (VENDORED / "socket.io.min.js").read_text()
    assert f"Socket.IO v{version}\n" in script[:200]  # the build's own banner
    assert script.rstrip().endswith("//# sourceMappingURL=socket.io.min.js.map")
    assert (VENDORED / "socket.io.min.js.map").stat().st_size > 0
    assert (VENDORED / "LICENSE").read_text().startswith("The MIT License")


def test_the_page_loads_it_before_the_app(tmp_path):
    app = monolith.create_app({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path),
                               "DATABASE_URL": f"sqlite:///{tmp_path / 'm.sqlite'}"})
    try:
        page = app.test_client().get("/").text
        scripts = re.findall(r'<script src="([^"]+)"', page)
        assert scripts == ["/static/vendor/socket.io-client/socket.io.min.js", "/static/app.js"]
        served = app.test_client().get(scripts[0])
        assert served.status_code == 200 and served.data == (VENDORED / "socket.io.min.js").read_bytes()
    finally:
        app.extensions["link_expander"].shutdown()


def package_data_files() -> set[Path]:
    """The files pyproject's package-data globs put into an installed package (setuptools' rules).

    For each package the finder discovers, the ``"*"`` patterns and the
    package's own are globbed relative to its folder.
    """
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]
    found: set[Path] = set()
    for package in find_namespace_packages(str(REPO), include=config["packages"]["find"]["include"]):
        folder = REPO / package.replace(".", "/")
        for pattern in patterns.get("*", []) + patterns.get(package, []):
            found |= {Path(p) for p in glob.glob(str(folder / pattern), recursive=True) if Path(p).is_file()}
    return found


def test_an_installed_package_carries_every_static_file():
    static_files = {p for p in STATIC.rglob("*") if p.is_file()}
    assert static_files - package_data_files() == set()
