"""Blue/green's rules (strangler/stack/upgrade.decide_blue_green, strangler/stack/bluegreen.actions).

Pure; the integration tests on a real stack are in test_bluegreen.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from strangler.stack.bluegreen import actions
from strangler.stack.upgrade import (
    Intent,
    Seen,
    UpgradeRefused,
    decide,
    decide_blue_green,
    finished,
)

BG = Intent("blue-green", "v2", {}, "v1", mode="blue-green", service="users-green", base="users")


def test_blue_green_starts_the_other_colour_and_refuses_while_anything_is_pending() -> None:
    assert decide_blue_green("blue-green", None, "v2", {}, ["v1"], "users", "users-green") == BG
    with pytest.raises(UpgradeRefused, match="a blue/green of release v2 is pending"):
        decide_blue_green("blue-green", BG, "v3", {}, ["v1", "v2"], "users", "users-green")
    with pytest.raises(UpgradeRefused, match="a try of release v2 is pending; `roll` or `abort` it first"):
        decide_blue_green("blue-green", Intent("try", "v2"), "v3", {}, ["v1"], "users", "users-green")
    with pytest.raises(UpgradeRefused, match="release v1 already runs"):
        decide_blue_green("blue-green", None, "v1", {}, ["v1", "v1"], "users", "users-green")


def test_finish_and_rollback_need_a_pending_blue_green_and_finish_a_switch() -> None:
    switched = finished(BG)
    assert switched.step == "switched" and switched.pending
    assert decide_blue_green("finish", switched, "x", {}, [], "users-green", "users").step == "finish"
    assert decide_blue_green("rollback", BG, "x", {}, [], "users", "users-green").step == "rollback"
    for step, says in (("finish", "nothing to finish"), ("rollback", "nothing to roll back")):
        for current in (None, Intent("try", "v2"), finished(replace(BG, step="finish"))):
            with pytest.raises(UpgradeRefused, match=says):
                decide_blue_green(step, current, "x", {}, [], "users", "users-green")
    with pytest.raises(UpgradeRefused, match="has not switched yet"):
        decide_blue_green("finish", BG, "x", {}, [], "users", "users-green")
    with pytest.raises(UpgradeRefused, match="is in progress"):
        decide_blue_green("rollback", decide_blue_green("finish", switched, "x", {}, [], "u", "u"), "x", {}, [],
                          "users-green", "users")


def test_try_roll_and_abort_are_refused_while_a_blue_green_is_pending() -> None:
    for step in ("try", "roll", "abort"):
        with pytest.raises(UpgradeRefused, match="a blue/green of release v2 is pending .* --rollback"):
            decide(step, finished(BG), "v3", {}, ["v1", "v2"], explicit=False)


def seen(*specs: str) -> list[Seen]:
    """``"u.1 users-green healthy"`` -> Seen."""
    return [Seen(name, "v", state, int(name.rsplit(".", 1)[1]), service)
            for name, service, state in (spec.split() for spec in specs)]


def test_the_new_set_is_started_in_full_then_switched_to_once_all_are_healthy() -> None:
    old = ("u.0 users healthy", "u.1 users healthy")
    assert actions(2, BG, seen(*old), "users") == ([("start", "new"), ("start", "new")], False)
    assert actions(2, BG, seen(*old, "u.2 users-green healthy", "u.3 users-green starting"), "users") == ([], False)
    both = seen(*old, "u.2 users-green healthy", "u.3 users-green healthy")
    assert actions(2, BG, both, "users") == ([("switch", "users-green")], False)
    assert actions(2, BG, both, "users-green") == ([], True)  # switched: confirmed live next
    # a crashed old instance is replaced in its own set while both run
    assert actions(2, finished(BG), both[1:], "users-green") == ([("start", "old")], False)


def test_finish_drains_the_old_set_and_rollback_switches_back_before_draining_the_new() -> None:
    both = seen("u.0 users healthy", "u.1 users healthy", "u.2 users-green healthy", "u.3 users-green healthy")
    finish = Intent("finish", "v2", {}, "v1", mode="blue-green", service="users-green", base="users")
    assert actions(2, finish, both, "users-green") == ([("drain", "u.0"), ("drain", "u.1")], False)
    assert actions(2, finish, both[2:], "users-green") == ([], True)
    rollback = Intent("rollback", "v2", {}, "v1", mode="blue-green", service="users-green", base="users")
    assert actions(2, rollback, both, "users-green") == ([("switch", "users")], False)
    assert actions(2, rollback, both, "users") == ([("drain", "u.2"), ("drain", "u.3")], False)
    assert actions(2, rollback, both[:2], "users") == ([], True)
