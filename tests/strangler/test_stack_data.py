"""strangler.stack.data and strangler.stack.follow: linking a service's data, write-through env, followers.

Pure functions on the repository's plan; linking on real SQLite databases
and a real etcd; a real follower process syncing both ways.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from strangler.links import LINKS_PREFIX, is_linked, read_links, unlinked
from strangler.migrate.sync import Syncer, SyncState
from strangler.plan import load_plan
from strangler.stack.data import (
    FOLLOW_ENV,
    METRICS_BIND_ENV,
    DataError,
    follower_command,
    link_all,
    state_paths,
    write_through,
)
from strangler.stack.procs import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plan(tmp_path: Path):
    """The repository's plan with its run dir (and so its SQLite databases) in tmp_path."""
    text_ = re.sub(r'^run_dir = "[^"]*"', 'run_dir = "run"', (REPO / "strangler.toml").read_text(), flags=re.M)
    path = tmp_path / "strangler.toml"
    path.write_text(text_)
    return load_plan(path)


def url(plan, name: str) -> str:
    return plan.database_url(name)


def test_write_through_pairs_the_monolith_with_each_linked_service(plan) -> None:
    def entry(peer: str, table: str, lane: list[int]) -> dict:
        return {"peers": [url(plan, peer)], "identity": list(plan.identity(table)), "lane": lane}

    peers = write_through(plan, ["users", "messages"])
    assert peers == {
        "monolith": {"users": entry("users", "users", [1, 2]),
                     "messages": entry("messages", "messages", [1, 2])},
        "users": {"users": entry("monolith", "users", [2, 2])},
        "messages": {"messages": entry("monolith", "messages", [2, 2])},
    }
    assert peers["messages"]["messages"]["identity"] == ["created_at", "user_id"]  # the plan's
    assert write_through(plan, ["users"]) == {"monolith": {"users": entry("users", "users", [1, 2])},
                                              "users": {"users": entry("monolith", "users", [2, 2])}}
    assert write_through(plan, []) == {}


def test_linked_means_recorded_with_every_table_the_plan_gives(plan) -> None:
    links = {"users": {"tables": ["users"]}, "messages": {"tables": []}}
    assert is_linked(plan, "users", links) and not is_linked(plan, "messages", links)
    # services without data are never "unlinked"; order and duplicates follow the input
    assert unlinked(plan, ["tokens", "messages", "users", "messages", "ui"], links) == ["messages"]
    assert unlinked(plan, ["users", "messages"], {}) == ["users", "messages"]


def test_follower_command_keeps_database_urls_out_of_argv(plan) -> None:
    name, argv, env = follower_command(plan, "users")
    assert name == "sync-users" and argv[1:] == ["-m", "strangler.stack.follow"]
    assert not any("sqlite" in part for part in argv)
    spec = json.loads(env[FOLLOW_ENV])
    forward, reverse = state_paths(plan.run_dir, "users")
    assert [(d["source"], d["target"], d["state"]) for d in spec["directions"]] == [
        (url(plan, "monolith"), url(plan, "users"), str(forward)),
        (url(plan, "users"), url(plan, "monolith"), str(reverse)),
    ]
    assert spec["tables"] == ["users"] and spec["interval"] > 0


# ---- on real databases -------------------------------------------------------------------


def rows(db_url: str, table: str) -> list[tuple]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
    finally:
        engine.dispose()


def run_sql(db_url: str, sql: str, **params: object) -> None:
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(sql), params)
    finally:
        engine.dispose()


def add_user(db_url: str, id: int, nickname: str, at: int) -> None:
    run_sql(db_url, "INSERT INTO users (id, created_at, updated_at, nickname, password_hash, last_seen_at, online) "
            "VALUES (:id, :at, :at, :n, 'h', :at, 0)", id=id, at=at, n=nickname)


@pytest.fixture
def etcd(etcd_server):
    client = etcd_server.client()
    client.delete_prefix(LINKS_PREFIX)
    return client


@pytest.mark.integration
def test_link_all_copies_once_records_the_link_then_catches_up(plan, etcd) -> None:
    lines: list[str] = []
    assert link_all(plan, etcd, lines.append) == ["users", "messages"]  # empty monolith: trivially linked
    assert rows(url(plan, "users"), "users") == []
    now = int(time.time())
    add_user(url(plan, "monolith"), 1, "ann", now)
    etcd.delete_prefix(LINKS_PREFIX)  # as if never linked: the copy runs again and takes ann
    link_all(plan, etcd, lines.append)
    assert rows(url(plan, "users"), "users") == rows(url(plan, "monolith"), "users")
    record = read_links(etcd)["users"]
    assert record["tables"] == ["users"] and record["rows"] == 1 and "users.sqlite" in record["target"]
    assert any(line.startswith("data: linked users with monolith (users 1 rows") for line in lines)
    # written on one side only while the stack was down (a write-through that failed): caught up
    add_user(url(plan, "users"), 2, "bob", now + 1)
    link_all(plan, etcd, lines.append)
    assert [r[3] for r in rows(url(plan, "monolith"), "users")] == ["ann", "bob"]
    assert lines[-2] == "data: users linked with monolith; caught up 1 row(s)"
    assert read_links(etcd)["users"]["linked_at"] == record["linked_at"]  # not copied again


@pytest.mark.integration
def test_a_diverged_service_database_is_one_line_and_not_recorded(plan, etcd) -> None:
    link_all(plan, etcd)
    etcd.delete_prefix(LINKS_PREFIX)
    add_user(url(plan, "users"), 7, "only-here", int(time.time()))
    with pytest.raises(DataError) as failure:
        link_all(plan, etcd)
    message = str(failure.value)
    assert "cannot link the services' data" in message and "diverged" in message and "\n" not in message
    assert "users" not in read_links(etcd)


@pytest.mark.integration
def test_link_all_with_nothing_to_link_touches_no_database(plan, etcd, tmp_path) -> None:
    bare = replace(plan, backends={n: b for n, b in plan.backends.items() if n not in ("users", "messages")})
    assert link_all(bare, etcd) == []
    assert not (plan.run_dir / "data").exists()


@pytest.mark.integration
def test_the_follower_syncs_both_ways_until_sigterm(plan, etcd) -> None:
    link_all(plan, etcd)
    port = free_port()
    name, argv, env = follower_command(plan, "users", metrics_port=port)
    assert env[METRICS_BIND_ENV] == f"127.0.0.1:{port}"
    log = plan.run_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        now = int(time.time())
        add_user(url(plan, "monolith"), 1, "ann", now)
        add_user(url(plan, "users"), 2, "bob", now)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if len(rows(url(plan, "monolith"), "users")) == 2 and len(rows(url(plan, "users"), "users")) == 2:
                break
            time.sleep(0.1)
        assert rows(url(plan, "monolith"), "users") == rows(url(plan, "users"), "users")
        assert len(rows(url(plan, "users"), "users")) == 2
        forward, reverse = state_paths(plan.run_dir, "users")
        for path in (forward, reverse):
            last = json.loads(path.read_text())["last_pass"]
            assert last["finished_at"] >= last["started_at"] > now - 5 and "error" not in last
        # its own /metrics, over HTTP: one row inserted each way, good passes, a lag per direction
        scraped = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(
                       requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
                   for s in family.samples}
        for direction in ("monolith -> users", "users -> monolith"):
            labels = (("direction", direction), ("service", "users"))
            assert scraped[("strangler_sync_rows_total", (*labels[:1], ("outcome", "inserted"), *labels[1:]))] == 1
            assert scraped[("strangler_sync_rows_total", (*labels[:1], ("outcome", "collision"), *labels[1:]))] == 0
            assert scraped[("strangler_sync_passes_total", (*labels[:1], ("result", "ok"), *labels[1:]))] >= 1
            assert scraped[("strangler_sync_lag_seconds", labels)] >= 0
            assert scraped[("strangler_sync_last_pass_timestamp_seconds", labels)] > now - 5
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
    assert code == 0
    output = log.read_text()
    assert "following users (users) every 0.5 s" in output and output.rstrip().endswith("stopped")
    assert "Traceback" not in output


@pytest.mark.integration
def test_a_follower_pass_leaves_fresh_changes_to_write_through(plan, etcd) -> None:
    link_all(plan, etcd)
    mono, users = url(plan, "monolith"), url(plan, "users")
    now = int(time.time())
    add_user(mono, 1, "settled", now - 5)
    add_user(mono, 2, "fresh", now)
    # the same row changed on both sides within one second: the users side last (written through)
    add_user(mono, 3, "went-offline", now - 5)
    add_user(users, 3, "went-offline", now - 5)
    run_sql(mono, "UPDATE users SET online = 1, updated_at = :t WHERE id = 3", t=now)
    run_sql(users, "UPDATE users SET online = 0, updated_at = :t WHERE id = 3", t=now)
    state = SyncState()  # from the start of time, in memory
    with Syncer(mono, users, ["users"], state, ("monolith", "users"), settle=2) as syncer:
        result = syncer.once()
    assert result.applied == 1 and [r[3] for r in rows(users, "users")] == ["settled", "went-offline"]
    assert rows(users, "users")[1][6] in (0, False)  # the monolith's older same-second online=1 did not win
    with Syncer(mono, users, ["users"], state, ("monolith", "users"), settle=0) as syncer:
        syncer.once()  # once settled (here: settle 0), the rest arrives
    assert [r[3] for r in rows(users, "users")] == ["settled", "fresh", "went-offline"]
