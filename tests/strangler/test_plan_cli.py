"""`strangler scan` and `strangler plan check` driven through the real CLI."""

import json
import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from strangler.cli import cli

FACTORY = '''
import json, pathlib
from flask import Flask

def create_app(config=None):
    app = Flask(__name__)
    routes = json.loads((pathlib.Path(__file__).parent / "routes.json").read_text())
    for rule, name, methods in routes:
        app.add_url_rule(rule, name, lambda **kw: "", methods=methods)
    return app
'''

PLAN = """\
# Flack's plan (hand-written comment)
[strangler]
strategy = "incremental"

[backends.monolith]
command = "gunicorn mono:app"
health = "/healthz"
app = "{module}:create_app"   # scanned

[backends.users]
command = "gunicorn users:app"
health = "/healthz"
endpoints = ["GET /api/users/<id>"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A plan next to a tiny monolith whose routes come from routes.json (edit it to change them)."""
    module = f"mono_{uuid.uuid4().hex[:10]}"  # fresh name: sys.modules caches imports
    (tmp_path / f"{module}.py").write_text(FACTORY)
    set_routes(tmp_path, [("/api/users/<int:id>", "api.get_user", ["GET", "PUT"]),
                          ("/healthz", "healthz", ["GET"])])
    (tmp_path / "strangler.toml").write_text(PLAN.format(module=module))
    return tmp_path


def set_routes(folder: Path, routes: list) -> None:
    (folder / "routes.json").write_text(json.dumps(routes))


def run(*args: str, cwd: Path, env: dict | None = None):
    """Invoke ``strangler *args`` from folder ``cwd`` (the plan defaults to ./strangler.toml)."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    finally:
        os.chdir(old)


def test_check_good_plan(project: Path):
    run("scan", cwd=project)
    result = run("plan", "check", cwd=project)
    assert result.exit_code == 0, result.output
    assert result.output == "plan OK: 3 endpoints, 2 backends, strategy incremental\n"


def test_check_reports_every_problem_with_key_path(project: Path):
    plan = project / "strangler.toml"
    plan.write_text(plan.read_text().replace('"incremental"', '"yolo"').replace(
        'health = "/healthz"\nendpoints', 'endpoints') + '\n[stack]\nweb_port = 80\n')
    result = run("plan", "check", "--plan", str(plan), cwd=project.parent)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        "strangler.strategy", "stack.web_port", "backends.users.health", "backends.users.endpoints[0]"]
    assert "run strangler scan?" in lines[3]
    assert lines[-1] == f"Error: {plan}: 4 problem(s)"


def test_check_malformed_toml_is_one_line(project: Path):
    plan = project / "strangler.toml"
    plan.write_text("[strangler\n")
    result = run("plan", "check", cwd=project)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "not valid TOML" in result.output and "line 1" in result.output


def test_plan_from_environment(project: Path, tmp_path_factory: pytest.TempPathFactory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = run("plan", "check", cwd=elsewhere, env={"STRANGLER_PLAN": str(project / "x.toml")})
    assert result.exit_code == 1 and "x.toml: no such plan file" in result.output


def test_scan_adds_endpoints_and_keeps_comments(project: Path):
    before = (project / "strangler.toml").read_text()
    result = run("scan", cwd=project)
    assert result.exit_code == 0, result.output
    assert "added   GET /api/users/<id>" in result.output
    assert "added   PUT /api/users/<id>" in result.output
    after = (project / "strangler.toml").read_text()
    assert after.startswith(before)  # every comment and hand-written line kept, in order
    assert 'endpoint = "GET /healthz"\nname = "healthz"' in after


def test_scan_is_idempotent_byte_for_byte(project: Path):
    run("scan", cwd=project)
    once = (project / "strangler.toml").read_bytes()
    result = run("scan", cwd=project)
    assert result.exit_code == 0 and "inventory up to date" in result.output
    assert (project / "strangler.toml").read_bytes() == once


def test_scan_marks_vanished_endpoints_gone_and_keeps_hand_edits(project: Path):
    run("scan", cwd=project)
    plan = project / "strangler.toml"
    plan.write_text(plan.read_text().replace('name = "healthz"', 'name = "healthz"\nnote = "keep"  # mine'))
    set_routes(project, [("/api/users/<int:id>", "api.get_user", ["GET", "PUT"])])
    result = run("scan", cwd=project)
    assert "gone    GET /healthz" in result.output
    text = plan.read_text()
    assert 'name = "healthz"\nnote = "keep"  # mine\ngone = true' in text


def test_scan_dry_run_writes_nothing(project: Path):
    before = (project / "strangler.toml").read_bytes()
    result = run("scan", "--dry-run", cwd=project)
    assert result.exit_code == 0 and "added" in result.output and "not written" in result.output
    assert (project / "strangler.toml").read_bytes() == before


def test_scan_malformed_toml_leaves_file_untouched(project: Path):
    plan = project / "strangler.toml"
    plan.write_text('[strangler]\nstrategy = "incremental\n')
    before = plan.read_bytes()
    result = run("scan", cwd=project)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "not valid TOML" in result.output
    assert plan.read_bytes() == before
    assert sorted(p.name for p in project.iterdir() if p.name.startswith(".strangler.toml")) == []


def test_scan_without_app_says_what_to_add(project: Path):
    plan = project / "strangler.toml"
    plan.write_text("\n".join(line for line in plan.read_text().splitlines() if not line.startswith("app")))
    result = run("scan", cwd=project)
    assert result.exit_code == 1
    assert "backends.monolith.app is missing" in result.output


def test_scan_reports_a_broken_factory_in_one_line(project: Path):
    (project / "routes.json").write_text("not json")
    result = run("scan", cwd=project)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "failed to start: JSONDecodeError" in result.output


def test_pass_plan_hands_a_checked_plan_to_a_command(project: Path):
    import click

    from strangler.plan.cli import pass_plan

    @click.command()
    @pass_plan
    @click.option("--who", default="users")
    def probe(plan, who):
        click.echo(f"{plan.strategy} {[str(e) for e in plan.service_endpoints(who)]}")

    runner = CliRunner()
    plan = project / "strangler.toml"
    run("scan", cwd=project)
    result = runner.invoke(probe, ["--plan", str(plan)])
    assert result.output == "incremental ['GET /api/users/<id>']\n"
    plan.write_text(plan.read_text().replace('"incremental"', '"yolo"'))
    result = runner.invoke(probe, [], env={"STRANGLER_PLAN": str(plan)})
    assert result.exit_code == 1 and "strangler.strategy: unknown strategy" in result.output


def test_write_atomically_keeps_mode_and_leaves_no_temp(tmp_path: Path):
    from strangler.plan.cli import write_atomically

    path = tmp_path / "strangler.toml"
    path.write_text("old")
    path.chmod(0o600)
    write_atomically(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["strangler.toml"]
