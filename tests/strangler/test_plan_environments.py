"""What is the monolith's comes from the plan: the secrets every backend shares, each database's alembic folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from migrations import HERE as OUR_MIGRATIONS
from strangler.cli import cli
from strangler.migrate.schema import databases
from strangler.plan import Plan
from strangler.stack.launch import backend_launches

BASE = {
    "strangler": {"run_dir": "run"},
    "backends": {
        "monolith": {"command": "gunicorn --bind {host}:{port} app:app", "health": "/healthz",
                     "app": "app:create_app", "database": "sqlite:///{run_dir}/data/m.sqlite"},
    },
}


def plan_of(tmp_path: Path, head: dict | None = None, monolith: dict | None = None) -> Plan:
    data = {"strangler": {**BASE["strangler"], **(head or {})},
            "backends": {"monolith": {**BASE["backends"]["monolith"], **(monolith or {})}}}
    return Plan.from_data(data, tmp_path / "strangler.toml")


def test_every_backend_gets_the_secrets_the_plan_names(tmp_path) -> None:
    plan = plan_of(tmp_path, {"secrets": ["SECRET_KEY", "JWT_SECRET_KEY", "CSRF_KEY"]})
    made = {"SECRET_KEY": "s", "JWT_SECRET_KEY": "j", "CSRF_KEY": "c"}
    (launch,) = backend_launches(plan, {"monolith": [5000]}, etcd_url="e", redis_url="r", secrets=made)
    assert {k: launch.env[k] for k in made} == made
    assert plan_of(tmp_path).secrets == ("SECRET_KEY", "JWT_SECRET_KEY")  # the default


def test_a_database_uses_the_alembic_folder_the_plan_names(tmp_path) -> None:
    shutil.copytree(OUR_MIGRATIONS / "monolith", tmp_path / "alembic")
    (db,) = databases(plan_of(tmp_path, monolith={"migrations": "alembic"}))
    assert db.env == str((tmp_path / "alembic").resolve())
    assert databases(plan_of(tmp_path))[0].env == "monolith"  # ours, by default


def test_a_missing_alembic_folder_is_one_line(tmp_path) -> None:
    path = tmp_path / "strangler.toml"
    path.write_text('[strangler]\nrun_dir = "run"\n[backends.monolith]\ncommand = "x {port}"\n'
                    'health = "/healthz"\napp = "app:create_app"\ndatabase = "sqlite:///{run_dir}/m.sqlite"\nmigrations = "nowhere"\n')
    result = CliRunner().invoke(cli, ["migrate", "current", "--plan", str(path)])
    assert result.exit_code == 1
    assert "no alembic environment" in result.output and 'migrations = "path/to/alembic"' in result.output
    assert "Traceback" not in result.output


def test_malformed_secrets_are_refused_by_the_plan_check(tmp_path) -> None:
    from strangler.plan import PlanError

    with pytest.raises(PlanError, match="strangler.secrets"):
        plan_of(tmp_path, {"secrets": ["SECRET_KEY", 3]})
