"""Write-through between linked databases: real apps (monolith, users, messages) on real databases.

Each test links fresh SQLite files (created empty by the apps themselves);
reads on the other side happen right after the write, with no sleep: the
write-through is done before the response is.
"""

from __future__ import annotations

import base64
import json
import threading

import pytest
from migrate_helpers import database
from servers import serving
from sqlalchemy import create_engine, insert, text, update

from datalink.tables import reflect
from datalink.writethrough import ENV_VAR, WriteThrough, parse_peers
from extracted.messages import create_app as create_messages
from extracted.users import create_app as create_users
from monolith import create_app as create_monolith
from strangler.stack import procs

pytestmark = pytest.mark.integration  # a real etcd (revocations) for the services

SECRET = "wt" * 32


def basic(nickname: str, password: str = "pw") -> dict[str, str]:
    raw = base64.b64encode(f"{nickname}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def settings(tmp_path, name: str, url: str, peers: dict | None = None, **extra) -> dict:
    return {"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / f"data-{name}"),
            "JWT_SECRET_KEY": SECRET, "DATABASE_URL": url,
            ENV_VAR: json.dumps(peers) if peers else "", **extra}


def rows(url: str, table: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
    finally:
        engine.dispose()


def execute(url: str, statement_of) -> None:
    engine = create_engine(url)
    try:
        info = reflect(engine, statement_of.table, "test")
        with engine.begin() as connection:
            connection.execute(statement_of.make(info.table))
    finally:
        engine.dispose()


class On:
    """A statement to run on *table* once it is reflected."""

    def __init__(self, table, make):
        self.table, self.make = table, make


def dispose(*apps) -> None:
    for app in apps:
        if "write_through" in app.extensions:
            app.extensions["write_through"].close()
        if "link_expander" in app.extensions:
            app.extensions["link_expander"].shutdown(wait=True)
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


@pytest.fixture
def urls(tmp_path) -> dict[str, str]:
    return {name: f"sqlite:///{tmp_path / f'{name}.sqlite'}" for name in ("monolith", "users", "messages")}


def wal(*urls: str) -> None:
    """Put SQLite files in WAL mode, as ``strangler migrate copy`` leaves a linked database."""
    for url in urls:
        engine = create_engine(url)
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode = WAL")
        engine.dispose()


@pytest.fixture
def linked(tmp_path, urls, etcd_server):
    """The monolith and the users and messages services, each writing through to the other side."""
    def lb(environ, start_response):  # the messages service reaches users over HTTP
        return apps["users"](environ, start_response)

    with serving(lb) as lb_url:
        apps = {
            "monolith": create_monolith(settings(
                tmp_path, "monolith", urls["monolith"],
                {"users": [urls["users"]], "messages": [urls["messages"]]})),
            "users": create_users(settings(
                tmp_path, "users", urls["users"], {"users": [urls["monolith"]]},
                STRANGLER_ETCD=etcd_server.url)),
            "messages": create_messages(settings(
                tmp_path, "messages", urls["messages"], {"messages": [urls["monolith"]]},
                STRANGLER_ETCD=etcd_server.url, STRANGLER_LB_URL=lb_url)),
        }
        wal(*urls.values())
        yield apps
        dispose(*apps.values())


def register(client, nickname: str) -> dict:
    created = client.post("/api/users", json={"nickname": nickname, "password": "pw"})
    assert created.status_code == 201, created.json
    return created.json


def login(client, nickname: str) -> str:
    response = client.post("/api/tokens", headers=basic(nickname))
    assert response.status_code == 200, response.json
    return response.json["token"]


# -- the pure parts -------------------------------------------------------------


def test_parse_peers_reads_json_and_names_the_variable_when_wrong():
    assert parse_peers('{"users": ["sqlite:///a.db", "sqlite:///a.db"], "messages": []}') == {
        "users": ("sqlite:///a.db",), "messages": ()}
    for bad in ("{not json", '["sqlite:///a.db"]', '{"users": "sqlite:///a.db"}', '{"users": [""]}',
                '{"users": ["no url here"]}'):
        with pytest.raises(ValueError, match=ENV_VAR):
            parse_peers(bad)


def test_unset_or_empty_is_off():
    assert WriteThrough.from_env({}) is None
    assert WriteThrough.from_env({ENV_VAR: " "}) is None
    assert WriteThrough.from_env({ENV_VAR: '{"users": []}'}) is None
    assert WriteThrough.from_env({ENV_VAR: '{"users": ["sqlite:///x.db"]}'}).peers == {
        "users": ("sqlite:///x.db",)}


def test_same_row_is_equal_identity_columns(tmp_path, urls):
    dispose(create_users(settings(tmp_path, "users", urls["users"])))
    engine = create_engine(urls["users"])
    info = reflect(engine, "users", "users")
    by_name = reflect(engine, "users", "users", identity=("created_at", "nickname"))
    engine.dispose()
    row = (1, 100, 100, "ada", "h", 100, False)
    edited = (1, 100, 200, "ada2", "h2", 200, True)
    other = (1, 101, 101, "bob", "h", 101, False)
    assert info.same_row(row, edited) and not info.same_row(row, other)
    assert not by_name.same_row(row, edited)  # the plan's identity decides
    assert info.describe(other) == "id 1 (created_at=101)"


# -- users: the service and the monolith see each other's writes at once ----------


def test_user_registered_on_the_service_logs_in_on_the_monolith_at_once(linked, urls):
    users, monolith = linked["users"].test_client(), linked["monolith"].test_client()
    user = register(users, "ada")
    assert monolith.get(f"/api/users/{user['id']}").json == user
    token = login(monolith, "ada")  # presence: online on the monolith, then on the service too
    assert users.get(f"/api/users/{user['id']}").json["online"] is True
    assert rows(urls["monolith"], "users") == rows(urls["users"], "users")
    # the monolith's token is good on the service for a user the service created
    assert users.get("/api/users", headers=bearer(token)).status_code == 200
    assert linked["users"].extensions["write_through"].stats["inserted"] == 1


def test_edits_and_presence_on_the_monolith_show_in_the_users_database(linked, urls):
    users, monolith = linked["users"].test_client(), linked["monolith"].test_client()
    user = register(users, "ada")
    token = login(monolith, "ada")  # marks the user online in the monolith's database
    edited = monolith.put(f"/api/users/{user['id']}", json={"nickname": "ada2"}, headers=bearer(token))
    assert edited.status_code == 204, edited.json
    on_service = users.get(f"/api/users/{user['id']}").json
    assert on_service["nickname"] == "ada2" and on_service["online"] is True
    assert rows(urls["users"], "users") == rows(urls["monolith"], "users")
    assert linked["monolith"].extensions["write_through"].stats["updated"] >= 2


def test_a_failed_commit_writes_nothing_through(linked, urls):
    users, monolith = linked["users"].test_client(), linked["monolith"].test_client()
    register(users, "ada")
    assert monolith.post("/api/users", json={"nickname": "ada", "password": "x"}).status_code == 400
    assert [r[3] for r in rows(urls["users"], "users")] == ["ada"]
    stats = linked["monolith"].extensions["write_through"].stats
    assert stats["inserted"] == stats["updated"] == stats["failed"] == 0


# -- messages ---------------------------------------------------------------------


def test_messages_posted_on_the_service_are_on_the_monolith_and_back(linked, urls):
    users, monolith, messages = (linked[n].test_client() for n in ("users", "monolith", "messages"))
    register(users, "ada")
    token = login(monolith, "ada")
    posted = messages.post("/api/messages", json={"source": "hi *there*"}, headers=bearer(token))
    assert posted.status_code == 201, posted.json
    message = posted.json
    assert monolith.get(f"/api/messages/{message['id']}").json == message
    edit = monolith.put(f"/api/messages/{message['id']}", json={"source": "bye"}, headers=bearer(token))
    assert edit.status_code == 204
    assert messages.get(f"/api/messages/{message['id']}").json["source"] == "bye"
    assert rows(urls["messages"], "messages") == rows(urls["monolith"], "messages")


# -- what must not be overwritten, and what must not fail --------------------------


def test_identity_conflict_is_left_alone_logged_and_counted(linked, urls, caplog):
    # the users database got its own user 1 (two inserters): the monolith's user 1 must not replace it
    execute(urls["users"], On("users", lambda t: insert(t).values(
        id=1, created_at=1000, updated_at=1000, nickname="mallory", password_hash="x",
        last_seen_at=1000, online=False)))
    monolith = linked["monolith"].test_client()
    assert register(monolith, "ada")["id"] == 1
    assert [r[3] for r in rows(urls["users"], "users")] == ["mallory"]
    assert linked["monolith"].extensions["write_through"].stats["conflicts"] == 1
    assert "CONFLICT" in caplog.text and "users id 1" in caplog.text
    # the monolith's row is not lost either: moved aside in the users database, once
    moved = rows(urls["users"], "strangler_collisions")
    assert [(r[1], r[2], r[3]) for r in moved] == [("users", 1, "write-through")]
    assert json.loads(moved[0][5])["nickname"] == "ada" and json.loads(moved[0][4])["nickname"] == "mallory"


def test_a_newer_row_in_the_peer_is_kept(linked, urls):
    users, monolith = linked["users"].test_client(), linked["monolith"].test_client()
    user = register(users, "ada")
    token = login(monolith, "ada")
    future = user["updated_at"] + 1000
    execute(urls["users"], On("users", lambda t: update(t).where(t.c.id == user["id"]).values(
        nickname="later", updated_at=future)))
    monolith.put(f"/api/users/{user['id']}", json={"nickname": "sooner"}, headers=bearer(token))
    assert [(r[2], r[3]) for r in rows(urls["users"], "users")] == [(future, "later")]
    assert linked["monolith"].extensions["write_through"].stats["kept_newer"] >= 1


def test_a_peer_that_is_down_fails_nothing_and_is_counted(tmp_path, urls):
    dead_pg = f"postgresql+psycopg2://postgres@127.0.0.1:{procs.free_port()}/test"
    missing = f"sqlite:///{tmp_path / 'nowhere' / 'users.sqlite'}"
    app = create_monolith(settings(tmp_path, "monolith", urls["monolith"],
                                   {"users": [dead_pg, missing]}))
    try:
        client = app.test_client()
        register(client, "ada")
        login(client, "ada")
        register(client, "bob")
        stats = app.extensions["write_through"].stats
        assert stats["failed"] == 2  # one per peer; then each is left alone for a moment
        assert stats["skipped"] >= 1
        assert not (tmp_path / "nowhere").exists()
    finally:
        dispose(app)


# -- server peers: explicit ids move PostgreSQL's sequence (MariaDB's moves by itself) --


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_server_peer_takes_its_own_next_id_after_written_through_ones(tmp_path, urls, kind):
    with database(kind, tmp_path, "wt_users") as peer:
        service = create_users(settings(tmp_path, "users", peer, {"users": [urls["monolith"]]}))
        monolith = create_monolith(settings(tmp_path, "monolith", urls["monolith"], {"users": [peer]}))
        try:
            on_monolith = [register(monolith.test_client(), name)["id"] for name in ("ada", "bob")]
            assert [r[0] for r in rows(peer, "users")] == on_monolith == [1, 2]
            mine = register(service.test_client(), "cyd")  # the server's own next id
            assert mine["id"] == 3
            assert [r[3] for r in rows(urls["monolith"], "users")] == ["ada", "bob", "cyd"]
            assert monolith.extensions["write_through"].stats["failed"] == 0
        finally:
            dispose(service, monolith)


# -- under concurrent load from both sides ------------------------------------------


def test_concurrent_writes_on_both_sides_all_arrive(linked, urls):
    import requests

    with serving(linked["users"]) as users_url, serving(linked["monolith"]) as monolith_url:
        errors: list[str] = []

        def worker(n: int) -> None:
            with requests.Session() as http:
                for i in range(5):
                    name = f"u{n}x{i}"
                    made = http.post(f"{users_url}/api/users", json={"nickname": name, "password": "pw"})
                    logged = http.post(f"{monolith_url}/api/tokens", headers=basic(name))
                    if made.status_code != 201 or logged.status_code != 200:
                        errors.append(f"{name}: {made.status_code} {logged.status_code}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert len(rows(urls["users"], "users")) == 20
    assert rows(urls["users"], "users") == rows(urls["monolith"], "users")
    for name in ("users", "monolith"):
        stats = linked[name].extensions["write_through"].stats
        assert stats["failed"] == stats["conflicts"] == stats["skipped"] == 0, (name, stats)


# -- id lanes: both sides insert at once, no id is handed out twice ----------------


def lanes_config(peer: str, lane: list[int]) -> dict:
    return {"users": {"peers": [peer], "identity": ["created_at"], "lane": lane}}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_id_lanes_keep_concurrent_inserts_on_both_sides_apart(tmp_path, kind):
    import requests

    from datalink.ids import Lane, configure_sequence

    with database(kind, tmp_path, "lane_mono") as mono_url, database(kind, tmp_path, "lane_users") as users_url:
        monolith = create_monolith(settings(tmp_path, "monolith", mono_url, lanes_config(users_url, [1, 2])))
        service = create_users(settings(tmp_path, "users", users_url, lanes_config(mono_url, [2, 2])))
        for url, lane in ((mono_url, Lane(1, 2)), (users_url, Lane(2, 2))):  # as strangler up does
            engine = create_engine(url)
            configure_sequence(engine, "users", "id", lane)
            engine.dispose()
        made: dict[str, list[int]] = {"monolith": [], "users": []}
        errors: list[str] = []
        try:
            with serving(monolith) as monolith_url, serving(service) as service_url:
                def worker(side: str, base: str, n: int) -> None:
                    with requests.Session() as http:
                        for i in range(6):
                            answer = http.post(f"{base}/api/users",
                                               json={"nickname": f"{side[0]}{n}x{i}", "password": "pw"})
                            if answer.status_code != 201:
                                errors.append(f"{side}: {answer.status_code} {answer.text[:80]}")
                            else:
                                made[side].append(answer.json()["id"])

                threads = [threading.Thread(target=worker, args=(side, base, n))
                           for side, base in (("monolith", monolith_url), ("users", service_url))
                           for n in range(3)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(60)
            assert errors == []
            assert all(i % 2 == 1 for i in made["monolith"]) and all(i % 2 == 0 for i in made["users"])
            every = made["monolith"] + made["users"]
            assert len(every) == len(set(every)) == 36
            assert sorted(r[0] for r in rows(users_url, "users")) == sorted(every)
            assert rows(users_url, "users") == rows(mono_url, "users")
            for app in (monolith, service):
                stats = app.extensions["write_through"].stats
                assert stats["failed"] == stats["conflicts"] == 0, stats
        finally:
            dispose(service, monolith)
