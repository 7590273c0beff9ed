"""Rolling upgrades' rules (strangler/stack/upgrade.py): what each step may do, and what comes next.

Pure; the integration test on a real stack is in test_supervise.py.
"""

from __future__ import annotations

import pytest

from strangler.stack.upgrade import Intent, Seen, UpgradeRefused, actions, decide, finished


def test_try_starts_one_of_the_new_release_and_refuses_a_second_try() -> None:
    intent = decide("try", None, "v2", {"A": "1"}, ["v1", "v1"], explicit=True)
    assert intent == Intent("try", "v2", {"A": "1"}, "v1")
    with pytest.raises(UpgradeRefused, match="a try of release v2 is pending; `roll` or `abort` it first"):
        decide("try", intent, "v3", {}, ["v1", "v2"], explicit=True)


def test_try_of_what_already_runs_is_refused() -> None:
    with pytest.raises(UpgradeRefused, match="release v1 already runs"):
        decide("try", None, "v1", {}, ["v1"], explicit=False)


def test_roll_takes_the_pending_try_or_means_try_and_roll() -> None:
    tried = Intent("try", "v2", {"A": "1"}, "v1")
    assert decide("roll", tried, "v9", {}, ["v1", "v2"], explicit=False) == Intent("roll", "v2", {"A": "1"}, "v1")
    assert decide("roll", None, "v2", {}, ["v1"], explicit=True) == Intent("roll", "v2", {}, "v1")
    assert decide("roll", finished(Intent("roll", "v2", {}, "v1")), "v3", {}, ["v2"], True).release == "v3"
    with pytest.raises(UpgradeRefused, match="a try of release v2 is pending; roll it"):
        decide("roll", tried, "v3", {}, ["v1", "v2"], explicit=True)
    with pytest.raises(UpgradeRefused, match="a roll of release v2 is in progress"):
        decide("roll", Intent("roll", "v2"), "v2", {}, ["v1"], explicit=False)
    with pytest.raises(UpgradeRefused, match="nothing to roll"):
        decide("roll", None, "v1", {}, ["v1", "v1"], explicit=False)


def test_abort_needs_something_pending() -> None:
    assert decide("abort", Intent("try", "v2", {}, "v1"), "x", {}, [], False) == Intent("abort", "v2", {}, "v1")
    for current in (None, Intent("rolled", "v2"), Intent("abort", "v2")):
        with pytest.raises(UpgradeRefused, match="nothing to abort"):
            decide("abort", current, "x", {}, [], False)


def seen(*specs: str) -> list[Seen]:
    """``"users.1 v2 healthy"`` -> Seen."""
    out = []
    for spec in specs:
        name, release, state = spec.split()
        out.append(Seen(name, release, state, int(name.rsplit(".", 1)[1])))
    return out


def test_a_try_runs_one_new_instance_beside_the_count() -> None:
    intent = Intent("try", "v2")
    assert actions(2, intent, seen("u.0 v1 healthy", "u.1 v1 healthy")) == ([("start", "new")], False)
    assert actions(2, intent, seen("u.0 v1 healthy", "u.1 v1 healthy", "u.2 v2 starting")) == ([], False)
    assert actions(2, intent, seen("u.0 v1 healthy", "u.1 v1 healthy", "u.2 v2 healthy")) == ([], True)
    # scaling during a try scales the old release
    assert actions(1, intent, seen("u.0 v1 healthy", "u.1 v1 healthy", "u.2 v2 healthy"))[0] == [("drain", "u.1")]


def test_a_roll_replaces_one_at_a_time_and_never_drops_below_the_count() -> None:
    intent = Intent("roll", "v2")
    steps = [
        (seen("u.0 v1 healthy", "u.1 v1 healthy"), [("start", "new")], False),
        (seen("u.0 v1 healthy", "u.1 v1 healthy", "u.2 v2 starting"), [], False),
        (seen("u.0 v1 healthy", "u.1 v1 healthy", "u.2 v2 healthy"), [("drain", "u.1")], False),
        (seen("u.0 v1 healthy", "u.2 v2 healthy"), [("start", "new")], False),
        (seen("u.0 v1 healthy", "u.2 v2 healthy", "u.1 v2 healthy"), [("drain", "u.0")], False),
        (seen("u.2 v2 healthy", "u.1 v2 healthy"), [], True),
    ]
    for instances, todo, done in steps:
        assert actions(2, intent, instances) == (todo, done), instances
    # a crashlooping new instance stops the roll where it is
    assert actions(2, intent, seen("u.0 v1 healthy", "u.1 v1 healthy", "u.2 v2 crashlooping")) == ([], False)


def test_an_abort_drains_the_new_release_and_restores_the_old_count() -> None:
    intent = Intent("abort", "v2")
    assert actions(2, intent, seen("u.0 v1 healthy", "u.2 v2 healthy")) == (
        [("drain", "u.2"), ("start", "old")], False)
    assert actions(2, intent, seen("u.0 v1 healthy", "u.3 v1 starting")) == ([], True)
    assert finished(Intent("roll", "v2")).step == "rolled" and finished(intent).step == "aborted"
