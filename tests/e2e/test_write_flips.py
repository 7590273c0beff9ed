"""Acknowledged writes survive inserting endpoints flipping back and forth under load, per engine.

One real stack per engine (``strangler up --detach``: etcd, Traefik, Redis,
the monolith and every service; the monolith's, users' and messages'
databases on SQLite, PostgreSQL or MariaDB, linked with id lanes). Four
writers post messages and register users through Traefik while the users
and messages services are flipped and rolled back again and again, then
put on a 50 % canary of their inserting endpoints. Afterwards every write
answered 201 is checked: no request failed, no id was handed out twice,
every acknowledged row is in both databases exactly as acknowledged, and
``strangler migrate verify`` is green for both services.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from databases import database
from platform_stack import Platform, down, up
from sqlalchemy import create_engine, text

from strangler.cli import cli
from strangler.plan import load_plan

pytestmark = pytest.mark.integration

WRITERS = 4
CYCLES = 26  # each: flip users, flip messages, roll both back -> 52 moves of each service
BIG_BANG_CYCLES = 12  # cutover --all, rollback
PACE = 0.06  # seconds between one writer's requests (about 50 writes/s from four)


@dataclass
class Writes:
    """What the writers were told: acknowledged rows by table, and every failure."""

    tag: str  # in every nickname and message: each run's own

    messages: list[tuple[int, str, int]] = field(default_factory=list)  # (id, source, user id)
    users: list[tuple[int, str]] = field(default_factory=list)  # (id, nickname)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, row: tuple) -> None:
        with self.lock:
            getattr(self, kind).append(row)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def register(http: requests.Session, web: str, nickname: str, writes: Writes) -> int | None:
    answer = http.post(f"{web}/api/users", json={"nickname": nickname, "password": "pw"}, timeout=15)
    if answer.status_code != 201:
        writes.fail(f"POST /api/users {nickname}: {answer.status_code} {answer.text[:120]}")
        return None
    writes.note("users", (answer.json()["id"], nickname))
    return answer.json()["id"]


def writer(web: str, n: int, stop: threading.Event, writes: Writes) -> None:
    """Register, log in, then post messages (and now and then a new user) until *stop*."""
    name = f"{writes.tag}writer{n}"
    with requests.Session() as http:
        me = register(http, web, name, writes)
        login = http.post(f"{web}/api/tokens", auth=(name, "pw"), timeout=15)
        if me is None or login.status_code != 200:
            writes.fail(f"writer {n} could not start: {login.status_code}")
            return
        bearer = {"Authorization": f"Bearer {login.json()['token']}"}
        i = 0
        while not stop.is_set():
            i += 1
            source = f"{name}-{i}"
            try:
                answer = http.post(f"{web}/api/messages", json={"source": source}, headers=bearer, timeout=15)
            except requests.RequestException as exc:
                writes.fail(f"POST /api/messages {source}: {type(exc).__name__}")
                continue
            if answer.status_code == 201:
                writes.note("messages", (answer.json()["id"], source, me))
            else:
                writes.fail(f"POST /api/messages {source}: {answer.status_code} {answer.text[:120]}")
            if i % 6 == 0:
                register(http, web, f"{name}u{i}", writes)
            stop.wait(PACE)


def socket_writer(web: str, stop: threading.Event, writes: Writes) -> None:
    """Post messages over Socket.IO (``post_message``, which posts through the load balancer)."""
    import socketio

    with requests.Session() as http:
        me = register(http, web, f"{writes.tag}sock", writes)
        login = http.post(f"{web}/api/tokens", auth=(f"{writes.tag}sock", "pw"), timeout=15)
    if me is None or login.status_code != 200:
        writes.fail(f"the Socket.IO writer could not start: {login.status_code}")
        return
    token, client = login.json()["token"], socketio.Client(reconnection=False)
    client.connect(web, transports=["websocket"], wait_timeout=10)
    try:
        i = 0
        while not stop.is_set():
            i += 1
            source = f"{writes.tag}sock-{i}"
            try:
                ack = client.call("post_message", ({"source": source}, token), timeout=15)
            except socketio.exceptions.SocketIOError as exc:
                writes.fail(f"post_message {source}: {type(exc).__name__}")
                continue
            if isinstance(ack, dict) and "id" in ack:
                writes.note("messages", (ack["id"], source, me))
            else:
                writes.fail(f"post_message {source}: {ack}")
            stop.wait(PACE * 2)
    finally:
        client.disconnect()


def strangler(platform: Platform, *args: str, plan: Path | None = None) -> str:
    result = CliRunner().invoke(cli, [*args, "--plan", str(plan or platform.plan), "--etcd", platform.state["etcd"],
                                      "--traefik-api", platform.state["traefik_api"]])
    assert result.exit_code == 0, f"strangler {' '.join(args)}: {result.output}"
    return result.output


def moves(platform: Platform) -> int:
    """Flip users and messages whole and roll both back, CYCLES times; then a canary round."""
    count = 0
    for cycle in range(CYCLES):
        order = ("users", "messages") if cycle % 2 else ("messages", "users")
        for service in order:
            strangler(platform, "flip", "--service", service, "--to", service)
        strangler(platform, "rollback")
        strangler(platform, "rollback")
        count += 4
    # write canaries: both databases insert at once, from their own id lanes
    strangler(platform, "flip", "POST /api/messages", "--to", "messages", "--weight", "50")
    strangler(platform, "flip", "POST /api/users", "--to", "users", "--weight", "50")
    return count


def table_rows(url: str, sql: str) -> dict[int, tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {row[0]: tuple(row[1:]) for row in connection.execute(text(sql))}
    finally:
        engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mariadb"])
def platform(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A stack whose monolith, users and messages databases are on the engine of the param."""
    base = tmp_path_factory.mktemp(f"writes-{request.param}")
    if request.param == "sqlite":
        stack = up(base)
        try:
            yield stack
        finally:
            down(stack.run_dir)
        return
    with (database(request.param, base, "wf_mono") as mono, database(request.param, base, "wf_users") as users,
          database(request.param, base, "wf_msgs") as msgs):
        stack = up(base, {"monolith": mono, "users": users, "messages": msgs})
        try:
            yield stack
        finally:
            down(stack.run_dir)


def writing(platform: Platform, tag: str, action) -> Writes:  # noqa: ANN001
    """Run the writers (four over HTTP, one over Socket.IO) while *action* runs; what they were told."""
    web, writes, stop = platform.web, Writes(tag), threading.Event()
    threads = [threading.Thread(target=writer, args=(web, n, stop, writes)) for n in range(WRITERS)]
    threads.append(threading.Thread(target=socket_writer, args=(web, stop, writes)))
    for thread in threads:
        thread.start()
    try:
        action(writes)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    return writes


def assert_every_write_kept(platform: Platform, writes: Writes) -> None:
    """No failure, no id twice, every acknowledged row in both databases as told; verify green."""
    assert writes.failures == []
    for kind, made in (("messages", writes.messages), ("users", writes.users)):
        ids = [row[0] for row in made]
        assert len(ids) == len(set(ids)), f"{kind}: ids handed out twice"
    plan = load_plan(platform.plan)
    queries = {"messages": "SELECT id, source, user_id FROM messages", "users": "SELECT id, nickname FROM users"}
    for kind, made in (("messages", writes.messages), ("users", writes.users)):
        for side in ("monolith", kind):
            held = table_rows(plan.database_url(side), queries[kind])
            lost = [row for row in made if held.get(row[0]) != tuple(row[1:])]
            assert lost == [], f"{kind} acknowledged but missing or changed in {side}'s database: {lost[:5]}"
    deadline = time.monotonic() + 30  # the followers settle; verify is polled for that state
    for service in ("users", "messages"):
        while True:
            result = CliRunner().invoke(cli, ["migrate", "verify", service, "--plan", str(plan.path)])
            if result.exit_code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert result.exit_code == 0, result.output


def test_no_acknowledged_write_is_lost_or_shares_an_id_while_inserting_endpoints_flip(platform):
    changes: list[int] = []

    def flips_then_canaries(writes: Writes) -> None:
        changes.append(moves(platform))
        during_canary = len(writes.messages) + 60  # then wait for writes under the canary (a state)
        deadline = time.monotonic() + 30
        while len(writes.messages) < during_canary and time.monotonic() < deadline and not writes.failures:
            time.sleep(0.1)

    writes = writing(platform, "flip", flips_then_canaries)
    strangler(platform, "rollback")
    strangler(platform, "rollback")
    assert changes == [CYCLES * 4] and CYCLES * 4 >= 100
    assert len(writes.messages) > 200, len(writes.messages)
    assert_every_write_kept(platform, writes)


def test_big_bang_cutover_and_rollback_lose_no_write(platform):
    def cutovers(writes: Writes) -> None:
        for _ in range(BIG_BANG_CYCLES):
            strangler(platform, "cutover", "--all", plan=platform.big_bang_plan)
            strangler(platform, "rollback", plan=platform.big_bang_plan)

    writes = writing(platform, "bang", cutovers)
    assert len(writes.messages) > 50, len(writes.messages)
    assert_every_write_kept(platform, writes)
