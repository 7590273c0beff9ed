"""``strangler migrate sync``: changes made through the apps reach the other database, both ways."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from migrate_helpers import (
    close_monolith,
    databases,
    execute,
    monolith_app,
    one_line_error,
    populate,
    rows,
    run,
    write_plan,
)

from strangler.migrate.sync import Syncer, SyncState, read_status, sync_once


@pytest.fixture(params=[("sqlite", "sqlite"), ("sqlite", "postgresql"), ("mariadb", "mariadb")],
                ids="->".join)
def copied(request, tmp_path):
    """A running monolith app with users and messages, already copied to both services' databases."""
    with databases(tmp_path, *request.param) as urls:
        app = monolith_app(urls["monolith"], tmp_path)
        try:
            made = populate(app.test_client(), users=2, messages=3)
            path = write_plan(tmp_path, urls)
            assert run(path, "upgrade").exit_code == 0
            for service in ("users", "messages"):
                assert run(path, "copy", service).exit_code == 0
            yield path, urls, app, made
        finally:
            close_monolith(app)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_new_rows_and_edits_reach_the_service(copied):
    path, urls, app, made = copied
    client = app.test_client()
    author = made["users"][0]
    token = made["tokens"][author["id"]]
    edited = made["messages"][0]["id"]
    # within the second of the copy: only re-reading that second finds these
    assert client.put(f"/api/messages/{edited}", json={"source": "edited *now*"},
                      headers=bearer(token)).status_code == 204
    posted = client.post("/api/messages", json={"source": "new"}, headers=bearer(token)).json
    result = run(path, "sync", "messages")
    assert result.exit_code == 0, result.output
    assert "synced 2 rows (messages +1 ~1); lag " in result.output
    assert run(path, "verify", "messages").exit_code == 0
    assert rows(urls["messages"], "messages")[-1][0] == posted["id"]

    again = run(path, "sync", "messages")  # idempotent: nothing left to carry
    assert "synced 0 rows (messages +0 ~0); lag 0.0 s" in again.output
    # an edit in the same second as the last pass is still found
    assert client.put(f"/api/messages/{edited}", json={"source": "edited twice"},
                      headers=bearer(token)).status_code == 204
    assert "synced 1 rows (messages +0 ~1)" in run(path, "sync", "messages").output
    assert run(path, "verify", "messages").exit_code == 0


def test_logins_bump_updated_at_so_last_seen_and_online_are_synced(copied):
    path, urls, app, made = copied
    user = made["users"][1]
    execute(urls["monolith"], "UPDATE users SET online = false, last_seen_at = 5, updated_at = 5 "
            "WHERE id = :id", id=user["id"])
    execute(urls["users"], "UPDATE users SET online = false, last_seen_at = 5, updated_at = 5 "
            "WHERE id = :id", id=user["id"])
    assert run(path, "verify", "users").exit_code == 0
    auth = base64.b64encode(f"{user['nickname']}:pw".encode()).decode()
    assert app.test_client().post("/api/tokens", headers={"Authorization": f"Basic {auth}"}).status_code == 200
    assert "synced 1 rows (users +0 ~1)" in run(path, "sync", "users").output
    assert run(path, "verify", "users").exit_code == 0
    synced = [r for r in rows(urls["users"], "users") if r[0] == user["id"]][0]
    assert synced[5] > 5 and synced[6]  # last_seen_at, online


def test_reverse_carries_service_changes_and_forward_keeps_them(copied, tmp_path):
    path, urls, _app, made = copied
    from extracted.users import create_app as create_users
    from extracted.users.models import db

    users = create_users({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "svc"),
                          "DATABASE_URL": urls["users"]})
    try:
        client = users.test_client()
        fresh = client.post("/api/users", json={"nickname": "born-there", "password": "pw"}).json
        renamed = made["users"][0]["id"]
    finally:
        with users.app_context():
            db.engine.dispose()
    # the monolith's row changed now (so the forward pass reads it, however long the set-up
    # took) and the service's 30 s later (updated_at is in whole seconds): the service's wins
    now = int(time.time())
    execute(urls["monolith"], "UPDATE users SET updated_at = :now WHERE id = :id", now=now, id=renamed)
    execute(urls["users"], "UPDATE users SET nickname = 'renamed-there', updated_at = :later"
            " WHERE id = :id", later=now + 30, id=renamed)
    forward = run(path, "sync", "users")
    assert "users +0 ~0 (kept 1 newer)" in forward.output, forward.output
    back = run(path, "sync", "users", "--reverse")
    assert "synced 2 rows (users +1 ~1)" in back.output, back.output
    assert run(path, "verify", "users").exit_code == 0
    nicknames = {r[0]: r[3] for r in rows(urls["monolith"], "users")}
    assert nicknames[fresh["id"]] == "born-there" and nicknames[renamed] == "renamed-there"
    assert (tmp_path / "run" / "sync" / "users-reverse.json").exists()


def test_follow_runs_until_stopped_and_reports_lag(copied, tmp_path):
    path, urls, app, made = copied
    result = run(path, "sync", "messages", "--follow", "--passes", "3", "--interval", "0.05")
    assert result.exit_code == 0, result.output
    assert [line.split(" ", 1)[1] for line in result.output.splitlines()] == [
        "synced 0 rows (messages +0 ~0); lag 0.0 s"] * 3

    token = made["tokens"][made["users"][0]["id"]]
    state = SyncState.load(tmp_path / "api-state.json")
    passes = []
    stop = threading.Event()

    def writer() -> None:
        client = app.test_client()
        for n in range(4):
            client.post("/api/messages", json={"source": f"live {n}"}, headers=bearer(token))
            time.sleep(0.15)

    thread = threading.Thread(target=writer)
    with Syncer(urls["monolith"], urls["messages"], ["messages"], state) as syncer:
        thread.start()
        syncer.follow(0.1, stop=stop, on_pass=lambda r: (passes.append(r), len(passes) >= 12 and stop.set()))
    thread.join()
    assert len(passes) == 12
    assert sum(p.applied for p in passes) >= 4 and any(p.lag > 0 for p in passes)
    tail = sync_once(urls["monolith"], urls["messages"], ["messages"], SyncState.load(state.path))
    assert tail.applied == 0 and tail.lag == 0.0  # the follow loop had caught up
    status = read_status(state.path)
    assert status["applied"] == 0 and 0 <= status["behind"] < 60
    assert run(path, "verify", "messages").exit_code == 0


def test_an_id_created_on_both_sides_is_kept_twice_and_reported(copied):
    path, urls, _app, _made = copied
    for url, created in ((urls["monolith"], 100), (urls["messages"], 200)):
        execute(url, "INSERT INTO messages (id, created_at, updated_at, source, html, user_id) "
                "VALUES (5000, :c, :c, :s, 'x', 1)", c=int(time.time()) + created, s=f"born at {created}")
    before = rows(urls["messages"], "messages")
    line = one_line_error(run(path, "sync", "messages"))
    assert "1 row(s) collided" in line and "strangler_collisions" in line
    assert rows(urls["messages"], "messages") == before  # the service's own row stays
    moved = rows(urls["messages"], "strangler_collisions")
    assert [(r[1], r[2]) for r in moved] == [("messages", 5000)] and "born at 100" in moved[0][5]
    one_line_error(run(path, "sync", "messages"))  # seen again, recorded once
    assert len(rows(urls["messages"], "strangler_collisions")) == 1
    verified = run(path, "verify", "messages")
    assert verified.exit_code == 1 and "COLLISIONS: 1 id(s)" in verified.output and "ids 5000" in verified.output
    assert "diverged" in one_line_error(run(path, "copy", "messages"))
