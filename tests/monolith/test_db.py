"""``monolith.db``: the alembic schema on SQLite, PostgreSQL and MariaDB, and safe first starts."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from databases import SERVERS, database, sqlite_write_lock_held
from flack_helpers import basic_auth, bearer
from sqlalchemy import create_engine, inspect, text

from monolith import create_app
from monolith.db import default_lock_path, ensure_schema, has_schema, upgrade_database


def assert_schema(url: str) -> None:
    engine = create_engine(url)
    try:
        found = inspect(engine)
        assert {"users", "messages", "revoked_tokens", "alembic_version"} <= set(found.get_table_names())
        user_indexes = {ix["name"]: ix for ix in found.get_indexes("users")}
        assert user_indexes["ix_users_nickname"]["unique"]
        assert "ix_users_updated_at" in user_indexes
        assert "ix_messages_updated_at" in {ix["name"] for ix in found.get_indexes("messages")}
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    finally:
        engine.dispose()


@pytest.fixture(params=sorted(SERVERS))
def server_url(request, tmp_path) -> Iterator[str]:
    """A fresh, uniquely named database on the local PostgreSQL / MariaDB server."""
    with database(request.param, tmp_path, "db") as url:
        yield url


def test_upgrade_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    assert not has_schema(url)
    upgrade_database(url)
    assert has_schema(url)
    assert_schema(url)
    upgrade_database(url)  # again: already at head, nothing to do
    assert_schema(url)


def test_ensure_schema_only_migrates_an_empty_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    assert ensure_schema(url) is True
    assert ensure_schema(url) is False


def test_create_app_migrates_an_empty_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    app = create_app({"STRANGLER_ENV": "testing", "DATABASE_URL": url,
                      "STRANGLER_DATA_DIR": str(tmp_path / "data")})
    app.extensions["link_expander"].shutdown()
    assert_schema(url)


def test_lock_of_a_sqlite_file_sits_beside_it(tmp_path):
    assert default_lock_path(f"sqlite:///{tmp_path / 'a.sqlite'}") == tmp_path / "a.sqlite.migrate.lock"
    other = default_lock_path("postgresql://u@h/db")
    assert other != default_lock_path("postgresql://u@h/db2")


def test_two_processes_starting_at_once_both_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.sqlite'}"
    script = (
        "import sys, time\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "from monolith import create_app\n"
        "app = create_app({'STRANGLER_ENV': 'testing', 'DATABASE_URL': sys.argv[1],"
        " 'STRANGLER_DATA_DIR': sys.argv[3]})\n"
        "app.extensions['link_expander'].shutdown()\n"
    )
    start_at = str(time.time() + 1.5)  # both import first, then start together
    procs = [
        subprocess.Popen([sys.executable, "-c", script, url, start_at, str(tmp_path / f"d{i}")],
                         stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    errors = [proc.communicate(timeout=60)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    assert_schema(url)


def test_upgrade_on_server(server_url):
    assert not has_schema(server_url)
    upgrade_database(server_url)
    assert_schema(server_url)
    upgrade_database(server_url)
    assert_schema(server_url)


def test_app_works_on_server(server_url, tmp_path):
    app = create_app({"STRANGLER_ENV": "testing", "DATABASE_URL": server_url,
                      "STRANGLER_DATA_DIR": str(tmp_path)})
    try:
        client = app.test_client()
        user = client.post("/api/users", json={"nickname": "ada", "password": "old"}).json
        assert client.post("/api/users", json={"nickname": "ada", "password": "x"}).status_code == 400
        token = client.post("/api/tokens", headers=basic_auth("ada", "old")).json["token"]
        message = client.post("/api/messages", json={"source": "*hi*"}, headers=bearer(token)).json
        assert client.get("/api/messages").json["messages"] == [message]
        # a new login in the same second as a password change must still work:
        # revocation instants need sub-second precision in every database
        assert client.put(f"/api/users/{user['id']}", json={"password": "new"},
                          headers=bearer(token)).status_code == 204
        fresh = client.post("/api/tokens", headers=basic_auth("ada", "new")).json["token"]
        assert client.get("/api/users", headers=bearer(fresh)).status_code == 200
        assert client.get("/api/users", headers=bearer(token)).status_code == 401
        assert client.get("/api/users/99999999999").status_code == 404
        assert client.get("/healthz").json["status"] == "ok"
    finally:
        app.extensions["link_expander"].shutdown()
        with app.app_context():
            from monolith import db

            db.engine.dispose()


def _schema_diff(url: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from monolith import db

    upgrade_database(url)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), db.metadata)
    finally:
        engine.dispose()


def test_models_and_migrations_agree(tmp_path):
    assert _schema_diff(f"sqlite:///{tmp_path / 'compare.sqlite'}") == []


def test_models_and_migrations_agree_on_server(server_url):
    assert _schema_diff(server_url) == []


def test_reads_do_not_wait_for_another_writer_on_sqlite(app_config, client, make_user):
    """GETs read in deferred transactions: one writer holding SQLite's lock holds up no reader.

    A writer (another connection, as another process would be) takes the
    write lock and keeps it until the reads are done, or 20 s: a read that
    queued behind it (BEGIN IMMEDIATE) would answer only after the release.
    """
    user, token = make_user("ada")
    client.post("/api/messages", json={"source": "hello"}, headers={"Authorization": f"Bearer {token}"})
    with sqlite_write_lock_held(app_config["DATABASE_URL"].removeprefix("sqlite:///")) as released:
        for path in ("/api/messages", "/api/users", f"/api/users/{user['id']}", "/api/messages/1"):
            answer = client.get(path)
            assert answer.status_code == 200 and not released.is_set(), path
