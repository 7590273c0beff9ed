"""`strangler init` through the real CLI, on Shelf (the second monolith) and on small apps."""

import sys
import tomllib
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from strangler.cli import cli
from strangler.plan import load_plan
from strangler.plan.scan import ScannedEndpoint
from strangler.plan.schema import Endpoint
from strangler.scaffold.init import choose_health

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "journey"))
from shelf_project import make_project  # noqa: E402


def run(project: Path, *args: str):
    return CliRunner().invoke(cli, [*args, "--plan", str(project / "strangler.toml")])


def scanned(*paths: str) -> list[ScannedEndpoint]:
    return [ScannedEndpoint(Endpoint(*p.split()), "x", p.split()[1]) for p in paths]


def test_init_writes_a_checked_commented_plan_and_scans_the_app(tmp_path):
    project = make_project(tmp_path)
    result = run(project, "init", "--app", "shelf:create_app")
    assert result.exit_code == 0, result.output
    text = (project / "strangler.toml").read_text()
    plan = load_plan(project / "strangler.toml")
    monolith = plan.backends["monolith"]
    assert monolith.command == ("gunicorn -c python:router.gunicorn_conf --bind {host}:{port} "
                                "'shelf:create_app()'")
    assert monolith.health == "/" and monolith.app == "shelf:create_app"
    assert plan.secrets == ("SECRET_KEY",) and plan.strategy == "incremental"
    assert plan.migrations("monolith") == ""  # no alembic: never Flack's migrations on this database
    assert "GET /api/books/<book_id>" in {str(e.endpoint) for e in plan.inventory}
    assert len(plan.inventory) == 10
    assert "# health: the app has no health endpoint" in text and "[stack]" in text
    assert not (project / "instance").exists()  # scan built the app on a throw-away database
    assert 'strangler new service books --endpoints "GET /api/books"' in result.output
    assert 'strangler compare "GET /api/books" --against books' in result.output
    assert run(project, "plan", "check").exit_code == 0


def test_init_refuses_to_overwrite_a_plan_without_force(tmp_path):
    project = make_project(tmp_path)
    (project / "strangler.toml").write_text("# mine\n")
    result = run(project, "init", "--app", "shelf:create_app")
    assert result.exit_code == 2
    assert "strangler.toml exists; pass --force" in result.output
    assert (project / "strangler.toml").read_text() == "# mine\n"
    assert run(project, "init", "--app", "shelf:create_app", "--force").exit_code == 0
    assert "[backends.monolith]" in (project / "strangler.toml").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--app", "shelf"], "write MODULE:FACTORY"),
    (["--app", "nosuchmodule:create_app"], "cannot import nosuchmodule"),
    (["--app", "shelf:nope"], "shelf has no callable nope"),
    (["--app", "shelf:create_app", "--name", "Mono"], "--name 'Mono': use lower-case"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    project = make_project(tmp_path)
    result = run(project, "init", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (project / "strangler.toml").exists()


def test_an_app_that_is_not_flask_or_fails_to_build_is_refused_in_one_line(tmp_path):
    module = f"odd_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "def number():\n    return 5\n\ndef boom():\n    raise RuntimeError('no database configured')\n")
    for factory, message in (("number", "returned int, not a Flask app"),
                             ("boom", "failed to start: RuntimeError: no database configured")):
        result = run(tmp_path, "init", "--app", f"{module}:{factory}")
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "strangler.toml").exists()


def test_an_app_object_and_its_own_health_endpoint_are_used_as_they_are(tmp_path):
    module = f"app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from flask import Flask\napp = Flask(__name__)\n"
        "@app.get('/health')\ndef health():\n    return 'ok'\n"
        "@app.get('/items/<int:id>')\ndef item(id):\n    return ''\n")
    result = run(tmp_path, "init", "--app", f"{module}:app", "--name", "legacy")
    assert result.exit_code == 0, result.output
    data = tomllib.loads((tmp_path / "strangler.toml").read_text())
    assert data["strangler"]["monolith"] == "legacy"
    backend = data["backends"]["legacy"]
    assert backend["command"].endswith(f"'{module}:app'") and backend["health"] == "/health"
    assert run(tmp_path, "plan", "check").exit_code == 0


def test_choose_health_prefers_the_apps_own_then_home_then_a_plain_page():
    assert choose_health(scanned("GET /", "GET /ping", "GET /healthz")).path == "/healthz"
    assert choose_health(scanned("GET /a/<id>", "GET /", "POST /x")).path == "/"
    assert choose_health(scanned("GET /a/<id>", "GET /about")).path == "/about"
    fallback = choose_health(scanned("POST /x", "GET /a/<id>"))
    assert fallback.path == "/" and "add a health endpoint" in fallback.why
