"""A column added on one side while linked: nothing stops, nothing is dropped, everything says so.

One real stack (``strangler up --detach``, SQLite). A nullable ``pinned``
column appears in the monolith's ``messages`` table during traffic (as a
revision of the monolith's would add it), and a nullable ``reactions``
one in the messages service's only. Then:

- writes on both backends keep working and read-your-writes holds across
  them (post on the service, edit on the monolith, and back), also after a
  worker reload of the messages service (``kill -HUP`` of its master);
- write-through reports no failure in ``strangler status``, and the
  follower's note names the columns only one side has;
- ``strangler migrate verify messages`` is green and notes them;
- once ``pinned`` exists on both sides, a value set on one is carried to
  the other (never silently dropped);
- ``strangler down`` then ``up`` links again.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
import requests
from click.testing import CliRunner
from platform_stack import Platform, down, up
from sqlalchemy import create_engine, text

from strangler.cli import cli
from strangler.plan import load_plan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    stack = up(tmp_path_factory.mktemp("schema"))
    try:
        yield stack
    finally:
        down(stack.run_dir)


def sql(platform: Platform, backend: str, statement: str, **params) -> list[tuple]:
    engine = create_engine(load_plan(platform.plan).database_url(backend))
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def wait_for(predicate, what, timeout: float = 20.0):  # noqa: ANN001, ANN201
    """Poll *predicate* until truthy; *what* (text, or a function giving it) names it on time-out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what() if callable(what) else what}"
        time.sleep(0.2)


def status(platform: Platform) -> dict:
    result = CliRunner().invoke(cli, ["status", "--json", "--plan", str(platform.plan),
                                      "--run-dir", str(platform.run_dir)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def round_trip(platform: Platform, tag: str) -> None:
    """Post on the messages service, edit on the monolith; post on the monolith, edit on the service."""
    web = platform.web
    nickname = f"ada{tag}"
    requests.post(f"{web}/api/users", json={"nickname": nickname, "password": "pw"}, timeout=10)
    token = requests.post(f"{web}/api/tokens", auth=(nickname, "pw"), timeout=10).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    for poster, editor in (("messages", "monolith"), ("monolith", "messages")):
        posted = requests.post(f"{platform.instance(poster)}/api/messages", json={"source": f"{tag} on {poster}"},
                               headers=bearer, timeout=10)
        assert posted.status_code == 201, posted.text
        mid = posted.json()["id"]
        edited = requests.put(f"{platform.instance(editor)}/api/messages/{mid}",
                              json={"source": f"{tag} edited on {editor}"}, headers=bearer, timeout=10)
        assert edited.status_code == 204, f"{poster} -> {editor}: {edited.status_code} {edited.text}"
        seen = requests.get(f"{platform.instance(poster)}/api/messages/{mid}", timeout=10).json()
        assert seen["source"] == f"{tag} edited on {editor}"


def test_a_column_added_on_either_side_while_linked_stops_nothing(platform):
    round_trip(platform, "before")
    sql(platform, "monolith", "ALTER TABLE messages ADD COLUMN pinned BOOLEAN")
    sql(platform, "messages", "ALTER TABLE messages ADD COLUMN reactions INTEGER")
    round_trip(platform, "after")

    master = platform.state["backends"]["messages"]["instances"][0]["pid"]
    os.kill(master, signal.SIGHUP)  # a worker reload: fresh workers reflect the tables anew
    wait_for(lambda: requests.get(f"{platform.instance('messages')}/healthz", timeout=2).ok, "messages back")
    round_trip(platform, "reloaded")

    found = status(platform)
    assert found["write_through"], found
    assert all(row["failed"] == 0 for row in found["write_through"]), found["write_through"]
    notes = wait_for(lambda: [n for row in status(platform)["data"] for n in row["notes"]],
                     "the follower's notes")
    assert any("messages.pinned is only in the monolith database" in n for n in notes), notes
    assert any("messages.reactions is only in the messages database" in n for n in notes), notes

    verified = CliRunner().invoke(cli, ["migrate", "verify", "messages", "--plan", str(platform.plan)])
    assert verified.exit_code == 0, verified.output
    assert "note: messages.pinned is only in the monolith database" in verified.output


def test_a_column_both_sides_have_is_carried(platform):
    sql(platform, "messages", "ALTER TABLE messages ADD COLUMN pinned BOOLEAN")
    top = sql(platform, "monolith", "SELECT max(id) FROM messages")[0][0]
    later = int(time.time()) + 1
    sql(platform, "monolith", "UPDATE messages SET pinned = 1, updated_at = :t WHERE id = :id", t=later, id=top)
    log = platform.run_dir / "logs" / "sync-messages.log"
    wait_for(lambda: sql(platform, "messages", "SELECT pinned FROM messages WHERE id = :id", id=top) == [(1,)],
             lambda: f"pinned of message {top} carried to the messages database; the follower's log "
                     f"ends: {log.read_text()[-1500:]}", timeout=30)


def test_down_and_up_again_link_with_the_extra_columns(platform):
    platform.restart()  # strangler down, then up on the same plan and run dir
    round_trip(platform, "again")
