"""Routing commands while etcd is wholly down and Traefik still serves: one line, nothing changed."""

from __future__ import annotations

import pytest
import requests
from click.testing import CliRunner
from routing_helpers import write_plan

from strangler.cli import cli
from strangler.stack import procs

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("args", [["routes"], ["flip", "GET /api/users/<id>", "--to", "users"],
                                  ["rollback"], ["history"]], ids=" ".join)
def test_says_traffic_keeps_flowing_on_the_last_routing(args, tmp_path, traefik_server):
    plan = write_plan(tmp_path, "incremental")
    dead = f"http://127.0.0.1:{procs.free_port()}"
    overview = requests.get(f"{traefik_server.api_url}/api/overview", timeout=5).json()
    result = CliRunner().invoke(cli, [*args, "--plan", str(plan)],
                                env={"STRANGLER_ETCD": dead, "STRANGLER_TRAEFIK_API": traefik_server.api_url})
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line == (f"Error: etcd not answering at {dead}; traffic keeps flowing on the last routing "
                    f"Traefik loaded (its API answers at {traefik_server.api_url}); nothing was changed: "
                    "bring etcd back (strangler status shows it) and retry")
    assert requests.get(f"{traefik_server.api_url}/api/overview", timeout=5).json() == overview


def test_without_traefik_either_it_says_how_to_start_etcd(tmp_path):
    plan = write_plan(tmp_path, "incremental")
    dead = f"http://127.0.0.1:{procs.free_port()}"
    result = CliRunner().invoke(cli, ["routes", "--plan", str(plan)],
                                env={"STRANGLER_ETCD": dead,
                                     "STRANGLER_TRAEFIK_API": f"http://127.0.0.1:{procs.free_port()}"})
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: etcd at {dead} is not answering: "
                                     "start it with `strangler up` or pass --etcd")
