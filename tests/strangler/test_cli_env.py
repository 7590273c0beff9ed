"""Every option that takes a value can come from the environment, and --help names the variable."""

from __future__ import annotations

from click.testing import CliRunner

from strangler.cli import cli


def test_help_names_each_options_variable() -> None:
    flip = CliRunner().invoke(cli, ["flip", "--help"]).output
    assert "STRANGLER_FLIP_WEIGHT" in flip and "STRANGLER_PLAN" in flip and "STRANGLER_ETCD" in flip
    copy = CliRunner().invoke(cli, ["migrate", "copy", "--help"]).output
    assert "STRANGLER_MIGRATE_COPY_CHUNK" in copy


def test_the_variable_the_help_names_is_read(tmp_path) -> None:
    plan = tmp_path / "strangler.toml"
    result = CliRunner().invoke(cli, ["migrate", "copy", "users", "--plan", str(plan)],
                                env={"STRANGLER_MIGRATE_COPY_CHUNK": "0"})
    assert result.exit_code == 2
    assert "Error: Invalid value for '--chunk'" in result.output and "0" in result.output
