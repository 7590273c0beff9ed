"""Every numeric option of every command has a range; a bad value is a one-line usage error (exit 2).

Driven through the real ``strangler`` group with CliRunner. A usage error is
raised before the command runs, so nothing is read, started or written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from strangler.cli import cli

REPO = Path(__file__).resolve().parents[2]

BAD = [
    (["migrate", "copy", "users"], "--chunk", "0"),
    (["migrate", "copy", "users"], "--chunk", "-5"),
    (["migrate", "copy", "users"], "--chunk", "100001"),
    (["migrate", "copy", "users"], "--chunk", "lots"),
    (["migrate", "sync", "users", "--follow"], "--passes", "-3"),
    (["migrate", "sync", "users", "--follow"], "--interval", "-1"),
    (["migrate", "sync", "users", "--follow"], "--interval", "0"),
    (["migrate", "sync", "users", "--follow"], "--interval", "nan"),
    (["compare", "GET /api/users"], "--timeout", "0"),
    (["compare", "GET /api/users"], "--timeout", "-2"),
    (["compare", "GET /api/users"], "--timeout", "inf"),
    (["compare", "GET /api/users"], "--timeout", "nan"),
    (["flip", "GET /api/users", "--to", "users"], "--timeout", "0"),
    (["flip", "GET /api/users", "--to", "users"], "--weight", "0"),
    (["flip", "GET /api/users", "--to", "users"], "--weight", "100"),
    (["flip", "GET /api/users", "--to", "users"], "--weight", "5.5"),
    (["flip", "GET /api/users", "--to", "users"], "--weight", "x"),
    (["cutover", "--all"], "--timeout", "-1"),
    (["rollback"], "--timeout", "1e9"),
    (["plan", "apply"], "--timeout", "0"),
    (["shadow", "GET /api/users", "--to", "users"], "--timeout", "0"),
    (["diffs"], "--examples", "-1"),
    (["up", "--detach"], "--web-port", "70000"),
    (["up", "--detach"], "--redis-port", "-1"),
    (["up", "--detach"], "--console-port", "65536"),
    (["status", "--watch"], "--interval", "0"),
    (["routes", "--watch"], "--interval", "nan"),
    (["logs"], "-n", "0"),
    (["console"], "--port", "70000"),
    (["monolith"], "--port", "0"),
    (["monolith"], "--workers", "0"),
    (["monolith"], "--threads", "100000"),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A directory holding only a copy of the plan; the commands run from it."""
    shutil.copy(REPO / "strangler.toml", tmp_path / "strangler.toml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("command", "option", "value"), BAD,
                         ids=[f"{' '.join(c[:2])} {o} {v}" for c, o, v in BAD])
def test_a_bad_number_is_a_usage_error_and_changes_nothing(workdir, command, option, value):
    result = CliRunner().invoke(cli, [*command, option, value])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: Invalid value for '{option}'"), result.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["strangler.toml"]


def _numeric_params(command: click.Command, path: tuple[str, ...] = ()):
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from _numeric_params(command.get_command(ctx, name), (*path, name))
        return
    for param in command.params:
        if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
            yield " ".join(path), param


def test_every_numeric_option_has_a_range():
    found = list(_numeric_params(cli))
    assert len(found) >= 15
    unbounded = [f"{where} {param.opts[0]}" for where, param in found
                 if not isinstance(param.type, click.types._NumberRangeBase)]
    assert unbounded == []


def test_the_range_is_named_and_good_values_pass(workdir):
    result = CliRunner().invoke(cli, ["compare", "GET /api/users", "--timeout", "0"])
    assert result.stderr.strip() == "Error: Invalid value for '--timeout': 0.0 is not in the range 0<x<=3600.0."
    result = CliRunner().invoke(cli, ["migrate", "sync", "users", "--interval", "nan"])
    assert "'nan' is not a number of seconds in the range 0.05<=x<=3600.0" in result.stderr
    # in range: the command runs (and fails for its own reason, with its own exit status)
    result = CliRunner().invoke(cli, ["flip", "GET /api/users", "--to", "users", "--weight", "25%",
                                      "--etcd", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "etcd" in result.output
