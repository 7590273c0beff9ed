"""Plan changes on a running stack: a second ``strangler up`` reconciles instead of refusing.

One real stack (``up --detach`` of the repository's plan on free ports, the
users service at first ``start = false``; of the other services only
messages, a linked one, starts: the rest would only make ``up`` and ``down``
longer). In order: the same plan changes nothing; users started (a backend
with tables: linked, its follower started, and the monolith rolled to write
through to it); a backend added to the plan (the tokens service's code under
another name, owning ``DELETE /api/tokens``) is started, registered, listed by
``status`` and flipped to; removing it from the plan is refused while it
serves that route, and after ``rollback`` it is drained and stopped; added
again, ``down`` stops it with the rest.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from router import registry
from router.etcd import Etcd
from strangler.cli import cli
from strangler.plan import load_plan
from strangler.stack import procs
from strangler.stack.replan import Change, diff, summary

REPO = Path(__file__).resolve().parents[2]
STRANGLER = str(Path(sys.executable).parent / "strangler")

IDLE = ("tokens", "socketio", "ui", "comparator")  # not started: nothing here needs them
TOKENS_ENDPOINTS = 'endpoints = ["POST /api/tokens", "DELETE /api/tokens"]'
USERS = "[backends.users]\n"
COLD = 'env = { STRANGLER_WARM_START = "0" }\n'
ADDED = '''
[backends.revocations]
command = "gunicorn -c python:extracted.tokens.gunicorn_conf --bind {host}:{port} extracted.tokens.wsgi:app"
health = "/healthz"
endpoints = ["DELETE /api/tokens"]
'''


def test_diff_names_what_the_plan_adds_and_drops(tmp_path: Path) -> None:
    text = (REPO / "strangler.toml").read_text().replace(USERS, USERS + "start = false\n")
    (tmp_path / "strangler.toml").write_text(text.replace("[backends.messages]\n", "[backends.messages]\ninstances = 2\n"))
    plan = load_plan(tmp_path / "strangler.toml")
    running = ["monolith", "users", "tokens", "socketio", "ui", "comparator", "legacy"]
    assert diff(plan, running) == Change({"messages": 2}, ["legacy", "users"])
    assert diff(plan, [*plan.backends]) == Change({}, ["users"])
    assert summary(Change({"messages": 2, "reviews": 1}, ["legacy"])) == \
        "started messages (2 instances); started reviews (1 instance); stopped legacy (drained)"
    assert summary(Change({}, [])) == "nothing to do: the stack matches the plan"


def strangler(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run the real CLI as a user would."""
    return subprocess.run([STRANGLER, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """``strangler up --detach`` of the repository's plan on free ports; ``down`` at the end."""
    base = tmp_path_factory.mktemp("replan")
    text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", (REPO / "strangler.toml").read_text(), flags=re.M)
    for name in IDLE:
        text, found = re.subn(rf"^\[backends\.{name}\]\n", rf"[backends.{name}]\nstart = false\n", text, flags=re.M)
        assert found == 1, name
    assert TOKENS_ENDPOINTS in text and USERS in text
    plan = base / "strangler.toml"
    # users and the monolith start cold (fresh interpreters): a test reads their environment in
    # /proc, where a process forked warm (strangler.stack.warm) shows the launcher's
    text = text.replace(USERS, USERS + COLD).replace("[backends.monolith]\n", "[backends.monolith]\n" + COLD)
    plan.write_text(text.replace(USERS, USERS + "start = false\n"))
    run_dir = base / "run"
    result = strangler("up", "--detach", "--plan", str(plan), "--run-dir", str(run_dir))
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        state = json.loads((run_dir / "state.json").read_text())
        yield {"state": state, "run_dir": run_dir, "plan": plan, "original": text,
               "with_added": text.replace(TOKENS_ENDPOINTS, 'endpoints = ["POST /api/tokens"]') + ADDED,
               "etcd": Etcd(state["etcd"])}
    finally:
        strangler("down", "--run-dir", str(run_dir))
        for record in procs.read_pidfiles(run_dir).values():  # only if down itself failed
            record.stop()


def up(stack: dict) -> subprocess.CompletedProcess:
    return strangler("up", "--detach", "--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"]))


def routing(stack: dict) -> tuple[str, ...]:
    return ("--plan", str(stack["plan"]), "--etcd", stack["state"]["etcd"],
            "--traefik-api", stack["state"]["traefik_api"])


def status(stack: dict) -> dict:
    """``status --json``, run in this process: the tests read it often; the commands they test run apart."""
    result = CliRunner().invoke(cli, ["status", "--json", "--plan", str(stack["plan"]),
                                      "--run-dir", str(stack["run_dir"])])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # stderr may carry a warning


def row(stack: dict, backend: str) -> dict | None:
    return next((r for r in status(stack)["backends"] if r["backend"] == backend), None)


def supervised(stack: dict, backend: str) -> list[dict]:
    data = json.loads((stack["run_dir"] / "supervisor.json").read_text())
    return [p for p in data["processes"].values() if p["backend"] == backend]


def start_revocations(stack: dict) -> procs.PidRecord:
    stack["plan"].write_text(stack["with_added"])
    result = up(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started revocations (1 instance)" in result.stdout
    record = procs.read_pidfiles(stack["run_dir"])["revocations.0"]
    assert record.running()
    (found,) = registry.instances(stack["etcd"], "revocations")
    assert found.pid == record.pid and procs.http_ok(found.url + "/healthz")
    assert [p["state"] for p in supervised(stack, "revocations")] == ["healthy"]
    return record


@pytest.mark.integration
def test_up_with_the_same_plan_on_a_running_stack_changes_nothing(stack: dict) -> None:
    before = {name: r.pid for name, r in procs.read_pidfiles(stack["run_dir"]).items()}
    result = up(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "nothing to do: the stack matches the plan"
    assert {name: r.pid for name, r in procs.read_pidfiles(stack["run_dir"]).items()} == before


@pytest.mark.integration
def test_a_backend_with_tables_is_linked_before_it_starts_and_the_monolith_rolled_writes_through(
        stack: dict) -> None:
    assert row(stack, "users")["state"] == "not started"
    stack["plan"].write_text(stack["original"])
    result = up(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "users linked" in result.stdout and "strangler upgrade monolith roll" in result.stdout
    assert "started users (1 instance)" in result.stdout
    records = procs.read_pidfiles(stack["run_dir"])
    assert records["users.0"].running() and records["sync-users"].running()
    data = status(stack)
    users = [r for r in data["data"] if r["service"] == "users"]
    assert [r["follower"] for r in users] == ["running", "running"], data["data"]
    assert next(r for r in data["backends"] if r["backend"] == "users")["state"] == "1/1 healthy"

    def write_through(pid: int) -> dict:
        env = dict(item.split("=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
        return json.loads(env.get("STRANGLER_WRITE_THROUGH", "{}"))

    assert "users" in write_through(records["users.0"].pid)
    assert "users" not in write_through(records["monolith.0"].pid)  # started before the link
    rolled = strangler("upgrade", "monolith", "roll", "--plan", str(stack["plan"]),
                       "--run-dir", str(stack["run_dir"]))
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr

    def monoliths() -> list[procs.PidRecord]:
        return [r for name, r in procs.read_pidfiles(stack["run_dir"]).items() if name.startswith("monolith.")]

    procs.wait_until(lambda: len(monoliths()) == 1, 60, "the old monolith instance drained")
    (monolith,) = monoliths()
    assert "users" in write_through(monolith.pid)
    assert requests.get(f"{stack['state']['web']}/healthz", timeout=10).status_code == 200


@pytest.mark.integration
def test_a_backend_added_to_the_plan_is_started_supervised_listed_and_can_be_flipped_to(stack: dict) -> None:
    record = start_revocations(stack)
    listed = row(stack, "revocations")
    assert listed is not None and listed["state"] == "1/1 healthy", listed
    (instance,) = listed["instances"]
    assert instance["registered"] and instance["pid"] == record.pid
    state = json.loads((stack["run_dir"] / "state.json").read_text())
    assert [i["pid"] for i in state["backends"]["revocations"]["instances"]] == [record.pid]

    flipped = strangler("flip", "DELETE /api/tokens", "--to", "revocations", *routing(stack))
    assert flipped.returncode == 0, flipped.stdout + flipped.stderr
    routes = {r["backend"]: r["endpoints"] for r in status(stack)["routes"]}
    assert routes.get("revocations") == 1, routes
    # served through Traefik by the new backend: no token, so the tokens code refuses it
    answer = requests.delete(f"{stack['state']['web']}/api/tokens", timeout=10)
    assert answer.status_code == 401, answer.text


@pytest.mark.integration
def test_a_backend_removed_from_the_plan_is_refused_while_it_serves_then_drained(stack: dict) -> None:
    record = procs.read_pidfiles(stack["run_dir"])["revocations.0"]
    stack["plan"].write_text(stack["original"])
    refused = up(stack)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "revocations" in refused.stderr and "DELETE /api/tokens" in refused.stderr
    assert "nothing changed" in refused.stderr
    assert record.running() and registry.instances(stack["etcd"], "revocations")

    undone = strangler("rollback", *routing(stack))
    assert undone.returncode == 0, undone.stdout + undone.stderr
    stopped = up(stack)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "stopped revocations (drained)" in stopped.stdout
    assert not record.running()
    assert "revocations.0" not in procs.read_pidfiles(stack["run_dir"])
    assert registry.instances(stack["etcd"], "revocations") == []
    assert supervised(stack, "revocations") == []
    assert row(stack, "revocations") is None
    assert "revocations" not in json.loads((stack["run_dir"] / "state.json").read_text())["backends"]
    # the rest still serves, and the plan now matches
    assert requests.get(f"{stack['state']['web']}/healthz", timeout=10).status_code == 200
    again = up(stack)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr


@pytest.mark.integration
def test_down_stops_a_backend_added_on_the_running_stack(stack: dict) -> None:
    record = start_revocations(stack)
    others = procs.read_pidfiles(stack["run_dir"])
    result = strangler("down", "--run-dir", str(stack["run_dir"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"stopped revocations\.0 \(pid {record.pid}\)", result.stdout), result.stdout
    assert not record.running()
    assert not [name for name, r in others.items() if r.running()]
    assert procs.read_pidfiles(stack["run_dir"]) == {}
