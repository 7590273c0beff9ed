"""`strangler upgrade BACKEND --blue-green` refusals that need no running stack (one line, nothing written).

The refusals and usage errors on a real stack are in test_bluegreen.py.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from strangler.cli import cli

REPO = Path(__file__).resolve().parents[2]


def test_blue_green_is_refused_when_another_backend_is_named_like_its_second_set(tmp_path: Path) -> None:
    """users' second set registers under the Traefik service users-green: a plan backend of that name
    would share it, and the switch would send users' traffic to that backend's instances too."""
    plan = tmp_path / "strangler.toml"
    plan.write_text((REPO / "strangler.toml").read_text()
                    + '\n[backends.users-green]\ncommand = "sleep 60"\nhealth = "/healthz"\n')
    result = CliRunner().invoke(cli, ["upgrade", "users", "--blue-green", "--plan", str(plan),
                                      "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert "users-green" in line and "blue/green" in line, line
    assert not (tmp_path / "run").exists()
