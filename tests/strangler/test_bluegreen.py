"""Blue/green upgrades, sticky backends and a draining ``down``, on one real stack (``up --detach``).

The repository's plan on free ports, with ``users`` at 2 instances and
declared ``sticky = true``. In order: blue/green of the monolith (its
``/healthz`` through Traefik's catch-all says which set answers) switched and
rolled back under load, with the refusals while it is pending; blue/green of
users switched and finished (a killed instance of the new set comes back in
its set); the sticky cookie through Traefik; last, ``down`` under load fails
no request while users is still registered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
from lifecycle_stack import (
    STRANGLER,
    Load,
    detached_stack,
    free_ports_plan,
    instances,
    status,
    strangler,
    wait_for,
)

from router import registry, table
from strangler.stack import procs
from strangler.stack.upgrade import upgrade_key


def _users_sticky_at_2(text: str) -> str:
    return text.replace('tables = ["users"]\n', 'tables = ["users"]\ninstances = 2\nsticky = true\n', 1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("bluegreen")
    plan = free_ports_plan(base, edit=_users_sticky_at_2)
    with detached_stack(plan, base / "run") as found:
        yield found


def args(stack: dict) -> tuple[str, ...]:
    return ("--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"]))


def routing(stack: dict) -> tuple[str, ...]:
    state = stack["state"]
    return ("--plan", str(stack["plan"]), "--etcd", state["etcd"], "--traefik-api", state["traefik_api"])


def released(stack: dict, n: int = 20) -> Counter:
    """The releases ``/healthz`` reports through Traefik (the catch-all: the monolith's live set)."""
    return Counter(requests.get(f"{stack['state']['web']}/healthz", timeout=10).json()["release"]
                   for _ in range(n))


def guarded(stack: dict) -> tuple[str | None, str | None, str | None]:
    """What a refusal must leave alone: the history guard, the options, and the upgrade intents."""
    etcd = stack["etcd"]
    return (etcd.get("strangler/meta/last-change"), etcd.get("strangler/meta/options"),
            json.dumps(etcd.get_prefix("strangler/stack/upgrade/")[0], sort_keys=True))


def refused(stack: dict, *cli: str, says: str, code: int = 1) -> None:
    refused_all(stack, [(cli, says, code)])


def refused_all(stack: dict, cases: list[tuple[tuple[str, ...], str, int]]) -> None:
    """Each ``(cli, says, code)`` exits ``code`` with one line containing ``says``, and none of them
    changes what :func:`guarded` reads. The commands run side by side (each only reads)."""
    before = guarded(stack)
    procs_ = [subprocess.Popen([STRANGLER, *cli], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for cli, _, _ in cases]
    try:
        outputs = [proc.communicate(timeout=180) for proc in procs_]
    finally:
        for proc in procs_:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    for (cli, says, code), proc, (out, err) in zip(cases, procs_, outputs, strict=True):
        assert proc.returncode == code, (cli, out, err)
        (line,) = err.strip().splitlines()
        assert says in line and "Traceback" not in err, line
    assert guarded(stack) == before, [cli for cli, *_ in cases]


@pytest.mark.integration
def test_upgrade_usage_errors_exit_2_in_one_line(stack: dict) -> None:
    refused_all(stack, [
        (("upgrade", "users", *args(stack)), "give one of try, roll, abort, --blue-green", 2),
        (("upgrade", "users", "try", "--blue-green", *args(stack)), "(not try and --blue-green)", 2),
        (("upgrade", "users", "--finish", "--release", "x", *args(stack)), "takes no --release", 2),
        (("upgrade", "nosuch", "--blue-green", *args(stack)), "no backend 'nosuch'", 2),
        (("upgrade", "users", "--finish", *args(stack)), "no blue/green is pending; nothing to finish", 1),
        (("upgrade", "users", "--rollback", *args(stack)), "no blue/green is pending; nothing to roll back", 1),
    ])


@pytest.mark.integration
def test_blue_green_of_the_monolith_switches_every_route_then_rolls_back_under_load(stack: dict) -> None:
    (old,) = released(stack)
    with Load(f"{stack['state']['web']}/healthz") as load:  # the monolith's live set answers all along
        switched = strangler("upgrade", "monolith", "--blue-green", "--release", "bg-2", *args(stack))
        assert switched.returncode == 0, switched.stdout + switched.stderr
        assert "switched every route of monolith to monolith-green" in switched.stdout
        assert released(stack) == {"bg-2": 20}  # confirmed live when the command returns
        options = table.load_options(stack["etcd"])
        assert options.sets == {"monolith": ["monolith-green", "monolith"]}
        sets = {(i["release"], i["service"], i["set"]) for i in instances(stack, "monolith")}
        assert sets == {(old, "monolith", "standby"), ("bg-2", "monolith-green", "live")}, sets
        # while it is pending: refused, nothing changed
        refused_all(stack, [
            (("upgrade", "monolith", "roll", *args(stack)), "a blue/green of release bg-2 is pending (switched)", 1),
            (("upgrade", "monolith", "--blue-green", "--release", "bg-3", *args(stack)),
             "a blue/green of release bg-2 is pending", 1),
            (("upgrade", "monolith", "try", *args(stack)), "a blue/green of release bg-2 is pending", 1),
            (("scale", "monolith=2", *args(stack)), "a blue/green of monolith is pending", 1),
        ])
        # a route written meanwhile points at the live set
        canary = strangler("flip", "GET /api/users/<id>", "--to", "users", "--weight", "10", *routing(stack))
        assert canary.returncode == 0, canary.stdout + canary.stderr
        weighted, _ = stack["etcd"].get_prefix("traefik/http/services/get-api-users-id-canary/weighted/services/")
        assert {v for k, v in weighted.items() if k.endswith("/name")} == {"monolith-green", "users"}
        rolled = strangler("upgrade", "monolith", "--rollback", *args(stack))
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        assert released(stack) == {old: 20}
        weighted, _ = stack["etcd"].get_prefix("traefik/http/services/get-api-users-id-canary/weighted/services/")
        assert {v for k, v in weighted.items() if k.endswith("/name")} == {"monolith", "users"}
    assert sum(load.codes.values()) > 50 and set(load.codes) == {200}, load.codes
    assert strangler("rollback", *routing(stack)).returncode == 0  # the canary
    assert table.load_options(stack["etcd"]).sets == {}
    assert [(i["release"], i["service"]) for i in instances(stack, "monolith")] == [(old, "monolith")]
    whats = [c.what for c in table.history(stack["etcd"]) if "monolith" in c.what and "upgrade" in c.what]
    assert [w.split(":")[0] for w in whats] == [
        "upgrade monolith --blue-green", "upgrade monolith blue/green", "upgrade monolith --rollback",
        "upgrade monolith blue/green", "upgrade monolith blue/green"], whats


def served_by(stack: dict, marker: str) -> list[tuple[str, str]]:
    """(Traefik service, server URL) of each request whose query carried ``marker``, from the access log."""
    found = []
    for line in (stack["run_dir"] / "logs" / "traefik-access.log").read_text().splitlines():
        if marker in line:
            entry = json.loads(line)
            found.append((entry.get("ServiceName", "").split("@")[0], entry.get("ServiceURL", "")))
    return found


def marked_gets(stack: dict, n: int, session: requests.Session | None = None) -> str:
    marker = uuid.uuid4().hex
    for i in range(n):
        answer = (session or requests).get(f"{stack['state']['web']}/api/users?m={marker}-{i}", timeout=10)
        assert answer.status_code == 200, answer.text
    return marker


@pytest.mark.integration
def test_blue_green_of_users_then_finish_leaves_only_the_new_set(stack: dict) -> None:
    assert strangler("flip", "GET /api/users", "--to", "users", *routing(stack)).returncode == 0
    (old,) = {i.release for i in registry.instances(stack["etcd"], "users")}
    with Load(f"{stack['state']['web']}/api/users") as load:
        switched = strangler("upgrade", "users", "--blue-green", "--release", "bg-u2", *args(stack))
        assert switched.returncode == 0, switched.stdout + switched.stderr
        marker = marked_gets(stack, 10)
        wait_for(lambda: len(served_by(stack, marker)) == 10, 10, "the requests in the access log")
        assert {service for service, _ in served_by(stack, marker)} == {"users-green"}
        # a kill -9 of a new-set instance: restarted in its own set, both sets kept
        green = [i for i in instances(stack, "users") if i["service"] == "users-green"]
        assert len(green) == 2 and all(i["set"] == "live" for i in green), green
        os.kill(green[0]["pid"], signal.SIGKILL)

        def back() -> bool:
            found = [i for i in registry.instances(stack["etcd"], "users") if i.url == green[0]["address"]]
            return bool(found) and found[0].pid != green[0]["pid"] and found[0].traefik_service == "users-green"

        wait_for(back, 30, "the killed users-green instance restarted in its set")
        assert len(instances(stack, "users")) == 4
        finished = strangler("upgrade", "users", "--finish", *args(stack))
        assert finished.returncode == 0, finished.stdout + finished.stderr
    assert sum(load.codes.values()) > 50 and set(load.codes) == {200}, load.codes
    seen = status(stack)  # one look for the rows and the problems
    rows = next(row for row in seen["backends"] if row["backend"] == "users")["instances"]
    assert {(r["release"], r["service"], r["set"], r["healthy"]) for r in rows} == {
        ("bg-u2", "users-green", "live", True)} and len(rows) == 2, rows
    assert not seen["problems"], seen["problems"]
    state = json.loads((stack["run_dir"] / "state.json").read_text())
    assert {i["service"] for i in state["backends"]["users"]["instances"]} == {"users-green"}
    assert json.loads(stack["etcd"].get(upgrade_key("users")))["step"] == "finished"
    assert table.load_options(stack["etcd"]).sets == {"users": ["users-green"]}
    refused(stack, "upgrade", "users", "--finish", *args(stack), says="nothing to finish")
    # the new set is the backend's from now on: scale starts it as that release, in that set
    assert strangler("scale", "users=3", *args(stack)).returncode == 0
    rows = instances(stack, "users")
    assert {(r["release"], r["service"]) for r in rows} == {("bg-u2", "users-green")} and len(rows) == 3, rows
    assert old != "bg-u2"  # left at 3 (no scale back to 2: a drain the down test below does anyway)


@pytest.mark.integration
def test_a_sticky_backend_sets_the_cookie_and_requests_carrying_it_stay_on_one_instance(stack: dict) -> None:
    service = requests.get(f"{stack['state']['traefik_api']}/api/http/services/users-green@etcd", timeout=5).json()
    assert service["loadBalancer"]["sticky"]["cookie"]["name"] == "strangler_sticky_users-green"
    first = requests.get(f"{stack['state']['web']}/api/users", timeout=10)
    assert "strangler_sticky_users-green" in first.cookies, first.headers
    session = requests.Session()
    session.cookies.set("strangler_sticky_users-green", first.cookies["strangler_sticky_users-green"])
    count = len(registry.instances(stack["etcd"], "users"))
    assert count >= 2, count
    kept = marked_gets(stack, 20, session)
    loose = marked_gets(stack, 20)  # no cookie: round robin over all of them
    wait_for(lambda: len(served_by(stack, kept)) == 20 and len(served_by(stack, loose)) == 20, 10,
             "the requests in the access log")
    assert len({url for _, url in served_by(stack, kept)}) == 1
    assert len({url for _, url in served_by(stack, loose)}) == count


@pytest.mark.integration
def test_down_under_load_fails_no_request_while_the_backend_is_registered(stack: dict) -> None:
    """Last: stops the module's stack. Every request sent while users was still in the registry is answered."""
    names = [i["name"] for i in json.loads((stack["run_dir"] / "state.json").read_text())["backends"]["users"]
             ["instances"]]
    assert len(registry.instances(stack["etcd"], "users")) == len(names) >= 2, names
    seen_registered = time.monotonic()
    with Load(f"{stack['state']['web']}/api/users") as load:
        wait_for(lambda: sum(load.codes.values()) > 20, 30, "the load flowing before down")
        down = subprocess.Popen([STRANGLER, "down", "--run-dir", str(stack["run_dir"])],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            while True:
                try:
                    if not registry.instances(stack["etcd"], "users"):
                        break
                except Exception:  # noqa: BLE001 — etcd is stopped last: users has left by then
                    break
                seen_registered = time.monotonic()
                time.sleep(0.02)
        finally:
            out, _ = down.communicate(timeout=120)
    assert down.returncode == 0, out
    before = [code for at, code in load.times if at < seen_registered]
    assert len(before) > 20 and set(before) == {200}, Counter(before)
    assert all(f"stopped {name} " in out for name in names) and not procs.read_pidfiles(stack["run_dir"]), out
    print(f"down: {len(before)} requests sent while users was registered, all 200; {Counter(load.codes)} in all")
