"""``strangler migrate upgrade/downgrade/current/history`` on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest
from migrate_helpers import ENGINES, databases, one_line_error, run, write_plan
from sqlalchemy import create_engine, inspect


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture(params=ENGINES)
def plan(request, tmp_path):
    """A plan whose three databases are fresh and empty, on one engine."""
    with databases(tmp_path, request.param, request.param) as urls:
        yield write_plan(tmp_path, urls), urls


def test_upgrade_current_downgrade_round_trip(plan):
    path, urls = plan
    before = run(path, "current")
    assert before.exit_code == 0, before.output
    assert "monolith: base (newest is 0001)" in before.output

    result = run(path, "upgrade")
    assert result.exit_code == 0, result.output
    assert tables(urls["monolith"]) == {"alembic_version", "users", "messages", "revoked_tokens"}
    assert tables(urls["users"]) == {"alembic_version", "users"}
    assert tables(urls["messages"]) == {"alembic_version", "messages"}
    at = run(path, "current").output.splitlines()
    assert at == ["monolith: 0001 (head)", "users: 0001 (head)", "messages: 0001 (head)"]

    down = run(path, "downgrade", "--db", "users", "base")
    assert down.exit_code == 0, down.output
    assert tables(urls["users"]) == {"alembic_version"}
    assert "users: base (newest is 0001)" in run(path, "current").output
    assert tables(urls["messages"]) == {"alembic_version", "messages"}  # only the one named

    again = run(path, "upgrade", "--db", "users", "0001")
    assert again.exit_code == 0, again.output
    assert again.output.strip().startswith("users: at 0001")
    assert "users" in tables(urls["users"])


def test_history_lists_each_environment(plan):
    path, _ = plan
    result = run(path, "history")
    assert result.exit_code == 0, result.output
    for name in ("monolith", "users", "messages"):
        assert f"{name} (migrations/{name}/):" in result.output
    assert result.output.count("<base> -> 0001 (head)") == 3
    assert run(path, "history", "--db", "messages").output.splitlines()[0] == "messages (migrations/messages/):"


def test_unknown_revision_is_one_line_and_touches_nothing(plan):
    path, urls = plan
    line = one_line_error(run(path, "upgrade", "--db", "users", "0042"))
    assert "unknown revision '0042'" in line and "0001" in line
    assert "users" not in tables(urls["users"])
    assert "unknown revision" in one_line_error(run(path, "downgrade", "--db", "monolith", "nope"))


def test_unreachable_database_is_one_line_without_password(tmp_path):
    path = write_plan(tmp_path, {
        "monolith": f"sqlite:///{tmp_path / 'm.sqlite'}",
        "users": "postgresql+psycopg2://postgres:hunter2@127.0.0.1:1/nowhere",
        "messages": "mysql+pymysql://root:hunter2@127.0.0.1:1/nowhere",
    })
    for db in ("users", "messages"):
        line = one_line_error(run(path, "upgrade", "--db", db))
        assert line.startswith(f"Error: cannot reach the {db} database at ")
        assert "127.0.0.1:1" in line and "hunter2" not in line
    assert "hunter2" not in run(path, "current").output


def test_backend_without_database_and_unknown_name(tmp_path):
    path = write_plan(tmp_path, {n: f"sqlite:///{tmp_path / n}.sqlite" for n in ("monolith", "users", "messages")})
    assert "backend 'tokens' has no database" in one_line_error(run(path, "upgrade", "--db", "tokens"))
    line = one_line_error(run(path, "current", "--db", "nosuch"))
    assert "unknown database 'nosuch'" in line and "users" in line
