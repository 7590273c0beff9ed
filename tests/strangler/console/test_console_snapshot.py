"""strangler.console.snapshot: the page's pure shapes (progress, history, instances, a diff side by side)."""

from __future__ import annotations

from pathlib import Path

from router.table import Change
from strangler.console.snapshot import (
    example_rows,
    history_rows,
    instance_rows,
    progress,
    promotion_rows,
    running_promotions,
)
from strangler.promote.records import Promotion


def test_progress_counts_moved_and_canary_endpoints_per_owner() -> None:
    rows = [
        {"owner": "users", "backend": "users", "weights": None},
        {"owner": "users", "backend": "monolith", "weights": {"monolith": 90, "users": 10}},
        {"owner": "users", "backend": "monolith", "weights": None},
        {"owner": "monolith", "backend": "monolith", "weights": None},  # the monolith keeps it
        {"owner": None, "backend": "users", "weights": None},  # not in the plan
    ]
    assert progress(rows, "monolith") == [{"service": "users", "moved": 1, "canary": 1, "total": 3}]


def change(id_: int, rollback_of: int | None = None) -> Change:
    return Change(id=id_, time="t", who="ann@host", what=f"change {id_}", revision=id_ * 10,
                  rollback_of=rollback_of, before={}, after={})


def test_history_is_newest_first_and_says_what_is_still_in_effect() -> None:
    rows = history_rows([change(1), change(2), change(3, rollback_of=2)])
    assert [(r["id"], r["in_effect"]) for r in rows] == [(3, False), (2, False), (1, True)]
    assert len(history_rows([change(i) for i in range(1, 80)], limit=50)) == 50


def test_instances_up_started_but_not_registered_are_listed_not_healthy() -> None:
    backends = [{"backend": "users", "state": "1/1 healthy", "instances": [
        {"id": "a", "address": "http://127.0.0.1:1", "version": "1", "pid": 11, "age": 3.0,
         "healthy": True, "traefik": "UP"}]}]
    started = {"users": {"instances": [
        {"name": "users.0", "url": "http://127.0.0.1:1", "pid": 11},
        {"name": "users.1", "url": "http://127.0.0.1:2", "pid": 12, "restarts": 2}]}}
    (row,) = instance_rows(backends, started, alive=lambda pid: pid == 11)
    first, second = row["instances"]
    assert (first["name"], first["healthy"], first["state"]) == ("users.0", True, "registered")
    assert (second["name"], second["healthy"], second["state"], second["restarts"]) == (
        "users.1", False, "process ended", 2)
    (dead,) = instance_rows(backends, started, alive=lambda pid: False)
    assert not dead["instances"][0]["healthy"]  # still registered (lease not expired), process gone


def test_an_example_is_aligned_side_by_side_with_the_difference_marked() -> None:
    example = {
        "monolith": {"status": 200, "body": '{"id": 1, "nickname": "susan"}'},
        "candidate": {"status": 200, "body": '{"id": 1, "nickname": "SUSAN"}'},
        "differences": [{"path": "nickname", "pattern": "nickname", "kind": "changed",
                         "left": "susan", "right": "SUSAN"}],
    }
    rows = example_rows(example)
    marked = [r for r in rows if r["mark"] == "≠"]
    assert [(r["left"].strip(), r["right"].strip()) for r in marked] == [
        ('"nickname": "susan"', '"nickname": "SUSAN"')]
    assert {r["mark"] for r in rows} == {"", "≠"} and rows[0]["left"] == "{"


def test_answering_keeps_the_plans_backends_only(tmp_path) -> None:
    from strangler.console.snapshot import answering
    from strangler.plan import load_plan

    plan = load_plan(Path(__file__).resolve().parents[3] / "strangler.toml")
    answered = {"monolith": 9.5, "users": 0.5, "comparator": 9.5, "get-api-users-canary": 1.0, "tokens": 0.0}
    assert answering(plan, answered) == {"monolith": 9.5, "users": 0.5}


def test_promotions_running_first_then_the_latest_ended_with_who_and_step() -> None:
    def made(id_: int, state: str, step: int = 0, abort: str | None = None) -> Promotion:
        return Promotion(id=id_, endpoints=[f"GET /e{id_}"], target="users", steps=[0, 100] if id_ == 3 else [5, 50],
                         interval=30, thresholds={}, who="console@host", state=state, step=step, abort=abort,
                         log=[{"n": 1, "line": f"line of {id_}"}])

    rows = promotion_rows([made(1, "rolled back"), made(2, "running", 1, abort="ann@h"), made(3, "running"),
                           made(4, "promoted")], limit=3)
    assert [(r["id"], r["state"], r["step"]) for r in rows] == [(3, "running", "shadow"), (2, "running", "50%"),
                                                               (4, "promoted", "5%")]
    assert rows[1]["abort"] == "ann@h" and rows[0]["who"] == "console@host" and rows[0]["last"] == "line of 3"
    assert running_promotions(rows) == {"GET /e3": 3, "GET /e2": 2}
