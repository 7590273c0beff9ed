"""``strangler migrate copy`` and ``verify``: a monolith filled through its API, copied to each engine."""

from __future__ import annotations

import pytest
from migrate_helpers import (
    close_monolith,
    database,
    databases,
    execute,
    monolith_app,
    one_line_error,
    populate,
    rows,
    run,
    write_plan,
)

PAIRINGS = [("sqlite", "sqlite"), ("sqlite", "postgresql"), ("sqlite", "mariadb"),
            ("postgresql", "postgresql"), ("mariadb", "mariadb")]


@pytest.fixture
def moved(request, tmp_path):
    """A monolith with 3 users and 12 messages made through its API; the services' schemas upgraded."""
    source, target = getattr(request, "param", ("sqlite", "sqlite"))
    with databases(tmp_path, source, target) as urls:
        app = monolith_app(urls["monolith"], tmp_path)
        try:
            made = populate(app.test_client())
        finally:
            close_monolith(app)
        path = write_plan(tmp_path, urls)
        assert run(path, "upgrade").exit_code == 0
        yield path, urls, made


def ids(url: str, table: str) -> list[int]:
    return [row[0] for row in rows(url, table)]


@pytest.mark.parametrize("moved", PAIRINGS, indirect=True, ids="->".join)
def test_copy_keeps_ids_is_idempotent_and_verifies(moved, tmp_path):
    path, urls, made = moved
    first = run(path, "copy", "users")
    assert first.exit_code == 0, first.output
    assert "copied 3 rows (users 3)" in first.output
    second = run(path, "copy", "messages")
    assert "copied 12 rows (messages 12)" in second.output, second.output
    assert ids(urls["users"], "users") == [u["id"] for u in made["users"]]
    assert ids(urls["messages"], "messages") == [m["id"] for m in made["messages"]]

    assert "copied 0 rows" in run(path, "copy", "users").output
    assert "copied 0 rows" in run(path, "copy", "messages").output
    for service in ("users", "messages"):
        result = run(path, "verify", service)
        assert result.exit_code == 0, result.output
        assert f"{service}: ok, " in result.output

    # the sequences moved past the copied ids: the services' own inserts do not collide
    from extracted.messages import create_app as create_messages
    from extracted.messages.models import Message, save
    from extracted.users import create_app as create_users

    config = {"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "svc")}
    users = create_users({**config, "DATABASE_URL": urls["users"]})
    new_user = users.test_client().post("/api/users", json={"nickname": "newcomer", "password": "pw"})
    assert new_user.status_code == 201, new_user.json
    assert new_user.json["id"] == max(u["id"] for u in made["users"]) + 1
    messages = create_messages({**config, "DATABASE_URL": urls["messages"]})
    try:
        with messages.app_context():
            model = save(Message(source="after", html="<p>after</p>", user_id=new_user.json["id"]))
        assert model["id"] == max(m["id"] for m in made["messages"]) + 1
    finally:
        messages.extensions["link_expander"].shutdown(wait=True)
        for app, module in ((users, "extracted.users.models"), (messages, "extracted.messages.models")):
            with app.app_context():
                __import__(module, fromlist=["db"]).db.engine.dispose()
    verdict = run(path, "verify", "users")
    assert verdict.exit_code == 1
    assert "users: DIFFERS: 3 vs 4 rows, 1 differing, e.g. ids 4" in verdict.output


@pytest.mark.parametrize("moved", [("sqlite", "sqlite"), ("sqlite", "postgresql")], indirect=True,
                         ids="->".join)
def test_diverged_target_is_refused_and_left_alone(moved):
    path, urls, made = moved
    assert run(path, "copy", "messages").exit_code == 0
    first = made["messages"][0]["id"]
    execute(urls["messages"], "UPDATE messages SET source = 'edited there', updated_at = updated_at + 100 "
            "WHERE id = :id", id=first)
    before = rows(urls["messages"], "messages")
    line = one_line_error(run(path, "copy", "messages"))
    assert "table 'messages' has diverged" in line and f"[{first}]" in line
    assert rows(urls["messages"], "messages") == before

    execute(urls["users"], "INSERT INTO users (id, created_at, updated_at, nickname, password_hash,"
            " last_seen_at, online) VALUES (999, 1, 1, 'stranger', 'x', 1, false)")
    line = one_line_error(run(path, "copy", "users"))
    assert "id(s) the monolith lacks, e.g. [999]" in line
    assert ids(urls["users"], "users") == [999]  # nothing else was copied


def test_rows_changed_after_copying_are_refreshed(moved):
    path, urls, made = moved
    assert run(path, "copy", "messages").exit_code == 0
    edited = made["messages"][1]["id"]
    execute(urls["monolith"], "UPDATE messages SET source = 'changed', updated_at = updated_at + 5 "
            "WHERE id = :id", id=edited)
    result = run(path, "copy", "messages")
    assert "copied 1 rows" in result.output, result.output
    assert run(path, "verify", "messages").exit_code == 0


def test_verify_names_tables_and_ids_that_differ(moved):
    path, urls, made = moved
    assert run(path, "copy", "messages").exit_code == 0
    changed = made["messages"][2]["id"]
    execute(urls["messages"], "UPDATE messages SET html = 'x' WHERE id = :id", id=changed)
    result = run(path, "verify", "messages")
    assert result.exit_code == 1
    assert f"messages: DIFFERS: 12 vs 12 rows, 1 differing, e.g. ids {changed}" in result.output
    assert result.output.splitlines()[-1] == "Error: messages: messages differ from the monolith's"
    assert "users: DIFFERS: 3 vs 0 rows" in run(path, "verify", "users").output


def test_a_column_the_target_alone_has_is_noted_or_refused(moved):
    path, urls, _ = moved
    execute(urls["users"], "ALTER TABLE users ADD COLUMN shoe_size INTEGER")  # nullable: fine
    copied = run(path, "copy", "users")
    assert copied.exit_code == 0, copied.output
    assert "note: users.shoe_size is only in the users database: rows from the monolith get its default" \
        in copied.output
    assert len(rows(urls["users"], "users")) == 3
    verified = run(path, "verify", "users")
    assert verified.exit_code == 0 and "note: users.shoe_size" in verified.output


def test_a_not_null_column_without_default_the_source_lacks_is_refused(moved):
    path, urls, _ = moved
    execute(urls["users"], "DROP TABLE users")
    execute(urls["users"], "CREATE TABLE users (id INTEGER PRIMARY KEY, created_at BIGINT, updated_at BIGINT, "
            "nickname VARCHAR(32), password_hash VARCHAR(256), last_seen_at BIGINT, online BOOLEAN, "
            "shoe_size INTEGER NOT NULL)")
    line = one_line_error(run(path, "copy", "users"))
    assert "users.shoe_size is NOT NULL without a default in the users database" in line
    assert "revision in migrations/" in line
    assert rows(urls["users"], "users") == []


def test_missing_databases_and_services_without_data(moved, tmp_path):
    path, urls, _ = moved
    (tmp_path / "users.sqlite").unlink()
    line = one_line_error(run(path, "copy", "users"))
    assert "users.sqlite does not exist; run strangler migrate upgrade --db users" in line
    assert not (tmp_path / "users.sqlite").exists()
    assert "owns no data" in one_line_error(run(path, "copy", "tokens"))
    assert "unknown service 'nobody'" in one_line_error(run(path, "copy", "nobody"))
    assert "is the monolith" in one_line_error(run(path, "sync", "monolith"))


def test_missing_server_database_is_one_line(tmp_path):
    with databases(tmp_path, "sqlite", "postgresql") as urls:
        path = write_plan(tmp_path, {**urls, "users": urls["users"] + "_gone"})
        assert run(path, "upgrade", "--db", "monolith").exit_code == 0
        line = one_line_error(run(path, "copy", "users"))
        assert "cannot reach the users database" in line and "does not exist" in line


@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mariadb"])
def test_bulk_insert_keeps_nulls_empty_strings_and_escapes(engine, tmp_path):
    from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine

    from datalink.tables import canonical_row, iter_rows, reflect
    from strangler.migrate.bulk import bulk_insert

    tricky = ["", None, "\\N", 'a\tb,"c"\n\\d\r', "é ✓"]
    with database(engine, tmp_path, "bulk") as url:
        meta = MetaData()
        for name, nullable in (("loose", True), ("strict", False)):
            Table(name, meta, Column("id", Integer, primary_key=True), Column("body", Text, nullable=nullable))
        sql = create_engine(url)
        try:
            meta.create_all(sql)
            for name in ("loose", "strict"):
                info = reflect(sql, name, "bulk")
                values = [(n + 1, v) for n, v in enumerate(tricky) if v is not None or name == "loose"]
                with sql.connect() as connection, connection.begin():
                    bulk_insert(connection, info, info, values)
                with sql.connect() as connection:
                    assert [canonical_row(r) for r in iter_rows(connection, info)] == values
        finally:
            sql.dispose()
