"""Release labels (strangler/stack/release.py): same inputs, same label; any input changed, another."""

from __future__ import annotations

from pathlib import Path

import pytest

from strangler.plan import Plan
from strangler.stack.release import check_name, release_label


def plan_in(folder: Path, **users: object) -> Plan:
    return Plan.from_data({
        "strangler": {"strategy": "incremental", "run_dir": "run"},
        "backends": {
            "monolith": {"command": "gunicorn --bind {host}:{port} app:app", "health": "/healthz",
                         "app": "app:create_app"},
            "users": {"command": "gunicorn --bind {host}:{port} users:app", "health": "/healthz",
                      **users},
        },
        "endpoints": [],
    }, folder / "strangler.toml")


def test_the_label_follows_command_env_and_code(tmp_path: Path) -> None:
    (tmp_path / "users.py").write_text("app = None\n")
    first = release_label(plan_in(tmp_path), "users", fresh=True)
    assert len(first) == 10 and int(first, 16) >= 0
    assert release_label(plan_in(tmp_path), "users") == first
    assert release_label(plan_in(tmp_path), "monolith") != first  # another command
    assert release_label(plan_in(tmp_path, env={"A": "1"}), "users") != first
    assert release_label(plan_in(tmp_path), "users", {"A": "1"}) == release_label(
        plan_in(tmp_path, env={"A": "1"}), "users")  # an upgrade's --env counts as the plan's would
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x.py").write_text("# the run dir is data, not code\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "y.py").write_text("# hidden folders are not the project's code\n")
    assert release_label(plan_in(tmp_path), "users", fresh=True) == first
    (tmp_path / "users.py").write_text("app = 1\n")
    assert release_label(plan_in(tmp_path), "users") == first  # cached until asked afresh
    assert release_label(plan_in(tmp_path), "users", fresh=True) != first


@pytest.mark.parametrize("name", ["", "-x", "a b", "x/y", "a" * 64])
def test_a_bad_release_name_is_refused_saying_what_is_allowed(name: str) -> None:
    with pytest.raises(ValueError, match="must be 1-63 letters"):
        check_name(name)


def test_a_good_release_name_is_kept() -> None:
    assert check_name("v2.1-blue_x") == "v2.1-blue_x"
