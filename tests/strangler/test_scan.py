"""scan_app over a Flask url_map, and update_inventory's tomlkit round-trip."""

import os
import sys
from pathlib import Path

import pytest
import tomlkit
from flask import Blueprint, Flask

from strangler.plan.scan import (
    ScanError,
    ScannedEndpoint,
    create_scan_app,
    load_factory,
    scan_app,
    update_inventory,
)
from strangler.plan.schema import Endpoint


def small_app() -> Flask:
    app = Flask(__name__)  # has the app-level "static" rule
    bp = Blueprint("api", __name__, static_folder="static", static_url_path="/s")

    @bp.route("/users", methods=["GET", "POST"])
    def users():
        return ""

    @bp.route("/users/<int:id>", methods=["GET", "PUT", "DELETE"])
    def user(id):
        return ""

    @bp.get("/files/<path:name>")
    def files(name):
        return ""

    app.register_blueprint(bp, url_prefix="/api")

    @app.get("/healthz")
    def healthz():
        return ""

    return app


def scanned(*specs: tuple[str, str, str]) -> list[ScannedEndpoint]:
    return [ScannedEndpoint(Endpoint(m, p), name, p) for m, p, name in specs]


def test_scan_app_one_entry_per_method_without_static_head_options():
    found = [(str(s.endpoint), s.name) for s in scan_app(small_app())]
    assert found == [
        ("GET /api/files/<path:name>", "api.files"),
        ("GET /api/users", "api.users"),
        ("POST /api/users", "api.users"),
        ("GET /api/users/<id>", "api.user"),
        ("PUT /api/users/<id>", "api.user"),
        ("DELETE /api/users/<id>", "api.user"),
        ("GET /healthz", "healthz"),
    ]


def test_scan_keeps_the_raw_rule():
    rules = {str(s.endpoint): s.rule for s in scan_app(small_app())}
    assert rules["GET /api/users/<id>"] == "/api/users/<int:id>"


DOC = """\
# my plan
[strangler]
strategy = "incremental"

# the inventory
[[endpoints]]
endpoint = "GET /a"   # keep me
name = "a"
note = "hand edit"

[[endpoints]]
endpoint = "GET /b"
name = "b"

[compare."GET /a"]
ignore = ["x"]
"""


def test_update_adds_marks_gone_and_keeps_edits():
    doc = tomlkit.parse(DOC)
    change = update_inventory(doc, scanned(("GET", "/a", "a"), ("POST", "/c", "c"), ("PUT", "/d", "d")))
    assert change.added == [Endpoint("POST", "/c"), Endpoint("PUT", "/d")]
    assert change.gone == [Endpoint("GET", "/b")]
    head, tail = DOC.split("[compare")
    expected = (
        head.replace('name = "b"\n', 'name = "b"\ngone = true\n')
        + '[[endpoints]]\nendpoint = "POST /c"\nname = "c"\n\n'
        + '[[endpoints]]\nendpoint = "PUT /d"\nname = "d"\n\n'
        + "[compare" + tail
    )
    assert tomlkit.dumps(doc) == expected


def test_update_is_idempotent():
    doc = tomlkit.parse(DOC)
    scan = scanned(("GET", "/a", "a"), ("POST", "/c", "c"))
    update_inventory(doc, scan)
    once = tomlkit.dumps(doc)
    again = tomlkit.parse(once)
    change = update_inventory(again, scan)
    assert not change.changed and change.lines() == []
    assert tomlkit.dumps(again) == once


def test_gone_endpoint_coming_back_and_rename():
    doc = tomlkit.parse(DOC)
    update_inventory(doc, scanned(("GET", "/a", "a")))
    change = update_inventory(doc, scanned(("GET", "/a", "a2"), ("GET", "/b", "b")))
    assert change.back == [Endpoint("GET", "/b")]
    assert change.renamed == [(Endpoint("GET", "/a"), "a", "a2")]
    assert "gone" not in tomlkit.dumps(doc)


def test_update_creates_inventory_in_empty_doc():
    doc = tomlkit.parse('[strangler]\nstrategy = "big-bang"\n')
    update_inventory(doc, scanned(("GET", "/x", "x")))
    text = tomlkit.dumps(doc)
    assert text.startswith('[strangler]\nstrategy = "big-bang"\n')
    assert "strangler scan" in text  # the explanatory comment
    assert tomlkit.parse(text)["endpoints"][0]["endpoint"] == "GET /x"


def test_update_leaves_unparseable_entries_alone():
    doc = tomlkit.parse('[[endpoints]]\nendpoint = "nonsense"\n')
    change = update_inventory(doc, scanned(("GET", "/x", "x")))
    assert change.added == [Endpoint("GET", "/x")] and change.gone == []
    assert tomlkit.parse(tomlkit.dumps(doc))["endpoints"][0]["endpoint"] == "nonsense"


def test_update_matches_entries_written_with_converters():
    doc = tomlkit.parse('[[endpoints]]\nendpoint = "GET /u/<int:id>"\nname = "u"\n')
    change = update_inventory(doc, scanned(("GET", "/u/<id>", "u")))
    assert not change.changed


FACTORY = '''
import os
from flask import Flask

def create_app(config=None):
    app = Flask(__name__)
    with open(os.environ["SCAN_PROBE"], "w") as f:
        f.write(config["DATABASE_URL"] + "\\n" + os.environ["DATABASE_URL"])

    @app.get("/ping")
    def ping():
        return "pong"

    return app

def broken():
    return 42
'''


def test_create_scan_app_uses_a_throwaway_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "scanprobe_factory.py").write_text(FACTORY)
    monkeypatch.setenv("SCAN_PROBE", str(tmp_path / "probe.txt"))
    monkeypatch.setenv("DATABASE_URL", "sqlite:///real.sqlite")
    work = tmp_path / "work"
    work.mkdir()
    app = create_scan_app("scanprobe_factory:create_app", work, search_path=tmp_path)
    assert [str(s.endpoint) for s in scan_app(app)] == ["GET /ping"]
    from_config, from_env = (tmp_path / "probe.txt").read_text().splitlines()
    assert from_config == from_env == f"sqlite:///{work / 'scan.sqlite'}"
    assert os.environ["DATABASE_URL"] == "sqlite:///real.sqlite"  # restored
    assert str(tmp_path) not in sys.path
    with pytest.raises(ScanError, match="not a Flask app"):
        create_scan_app("scanprobe_factory:broken", work, search_path=tmp_path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nocolon", "module:factory"), ("no_such_module_xyz:app", "cannot import"),
     ("os:no_such_factory", "no callable")],
)
def test_load_factory_errors(spec, message):
    with pytest.raises(ScanError, match=message):
        load_factory(spec)


def test_repository_inventory_matches_the_monolith(tmp_path: Path):
    """The committed strangler.toml lists exactly the monolith's endpoints (rerun strangler scan)."""
    root = Path(__file__).parents[2]
    doc = tomlkit.parse((root / "strangler.toml").read_text())
    app = create_scan_app(doc["backends"]["monolith"]["app"], tmp_path, search_path=root)
    change = update_inventory(doc, scan_app(app))
    assert change.lines() == []
