"""Routing (and compare) commands with ``[stack] etcd_port = 0`` and no stack running.

The port exists only while a stack runs, so the commands must say that no
stack is running and how to start one, in one line, instead of trying some
default port (etcd's 2379 may be a system etcd's).
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from routing_helpers import write_plan

from strangler.cli import cli

COMMANDS = [
    ["routes"],
    ["routes", "--json"],
    ["history"],
    ["flip", "GET /api/users/<id>", "--to", "users"],
    ["rollback"],
    ["cutover", "--all"],
    ["plan", "apply"],
    ["plan", "apply", "--dry-run"],
    ["compare", "GET /api/users/1", "--against", "users"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_says_no_stack_is_running(args, tmp_path):
    plan = write_plan(tmp_path, "incremental")
    result = CliRunner().invoke(cli, [*args, "--plan", str(plan)],
                                env={"STRANGLER_ETCD": None, "STRANGLER_TRAEFIK_API": None})
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: no stack is running from ")
    assert f"`strangler up --plan {plan}`" in line and "2379" not in line


def test_needs_traefik_only_when_it_waits_for_it(tmp_path):
    plan = write_plan(tmp_path, "incremental")
    env = {"STRANGLER_ETCD": "http://127.0.0.1:1", "STRANGLER_TRAEFIK_API": None}
    result = CliRunner().invoke(cli, ["flip", "GET /api/users/<id>", "--to", "users",
                                      "--plan", str(plan)], env=env)
    assert result.exit_code == 1
    assert "dashboard_port = 0" in result.output and "--traefik-api URL" in result.output
