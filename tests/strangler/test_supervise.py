"""The stack's supervisor and instance lifecycle, on one real stack started with ``up --detach``.

The repository's plan on free ports, plus a backend whose command exits at
once. In order: a ``kill -9`` is restarted, a crashing backend ends
crashlooping while the rest serves, SIGTERM deregisters before gunicorn stops
accepting; ``scale`` and its refusals; rolling upgrades. Blue/green, sticky
backends and ``down`` draining under load are in test_bluegreen.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from lifecycle_stack import REPO, Load, instances, status, strangler, wait_for

from router import registry
from router.etcd import Etcd
from strangler.stack import procs
from strangler.stack.supervise import BACKOFF_CAP, BACKOFF_FIRST, backoff

BROKEN = '''
[backends.broken]
command = "python -c 'raise SystemExit(3)'"
health = "/healthz"
'''


def test_backoff_doubles_from_the_first_delay_and_is_capped() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST,
                                                  8 * BACKOFF_FIRST]
    assert backoff(40) == BACKOFF_CAP


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """``strangler up --detach`` of the repository's plan plus ``broken``; ``down`` at the end."""
    base = tmp_path_factory.mktemp("supervised")
    text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", (REPO / "strangler.toml").read_text(), flags=re.M)
    text = text.replace("[stack]", "[stack]\nlog_max_mb = 1  # the smallest size, for the rotation test", 1)
    plan = base / "strangler.toml"
    plan.write_text(text + BROKEN)
    run_dir = base / "run"
    result = strangler("up", "--detach", "--plan", str(plan), "--run-dir", str(run_dir))
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        state = json.loads((run_dir / "state.json").read_text())
        yield {"state": state, "run_dir": run_dir, "plan": plan, "up": result.stdout,
               "etcd": Etcd(state["etcd"])}
    finally:
        strangler("down", "--run-dir", str(run_dir))
        for record in procs.read_pidfiles(run_dir).values():  # only if down itself failed
            record.stop()


@pytest.mark.integration
def test_up_detached_leaves_a_supervisor_running(stack: dict) -> None:
    record = procs.read_pidfiles(stack["run_dir"])["supervisor"]
    assert record.running()
    assert f"supervisor pid {record.pid}" in stack["up"]
    data = status(stack)
    assert data["supervised"] and not [p for p in data["problems"] if "no supervisor" in p]


@pytest.mark.integration
def test_kill9_of_the_only_users_instance_is_restarted_healthy_and_registered(stack: dict) -> None:
    url = stack["state"]["backends"]["users"]["instances"][0]["url"]
    old = procs.read_pidfiles(stack["run_dir"])["users.0"]
    os.kill(old.pid, signal.SIGKILL)

    def back() -> bool:
        record = procs.read_pidfiles(stack["run_dir"]).get("users.0")
        if record is None or record.pid == old.pid or not procs.http_ok(url + "/healthz"):
            return False
        found = registry.instances(stack["etcd"], "users")
        return [i.pid for i in found if i.url == url] == [record.pid]

    # 5 s on an idle machine; a loaded one (other suites running) is given its load's share
    budget = 5 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    seconds = wait_for(back, budget, "users.0 restarted, healthy and registered")
    print(f"kill -9 to restarted, healthy and registered: {seconds:.1f}s (budget {budget:.1f}s)")
    (instance,) = instances(stack, "users")
    assert (instance["restarts"], instance["last_exit"], instance["registered"]) == (1, -9, True)
    assert instance["state"] == "healthy" and instance["pid"] != old.pid
    assert requests.get(f"{stack['state']['web']}/api/users", timeout=10).status_code == 200
    table = strangler("status", "--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"])).stdout
    assert re.search(r"users .*healthy .*\b1\b .*-9", table), table


@pytest.mark.integration
def test_infrastructure_and_followers_are_restarted_like_any_process(stack: dict) -> None:
    run_dir, web = stack["run_dir"], stack["state"]["web"]
    names = ("traefik", "sync-users")  # no special case per kind of process
    olds = {name: procs.read_pidfiles(run_dir)[name] for name in names}
    for old in olds.values():  # both at once: their restarts overlap
        os.kill(old.pid, signal.SIGKILL)
    for name, old in olds.items():
        wait_for(lambda name=name, old=old: procs.read_pidfiles(run_dir)[name].pid != old.pid
                 and procs.read_pidfiles(run_dir)[name].running(), 30, f"{name} restarted")
    wait_for(lambda: procs.http_ok(f"{web}/api/users"), 30, "the app through the restarted Traefik")
    rows = {p["name"]: p for p in status(stack)["processes"]}
    assert (rows["traefik"]["restarts"], rows["traefik"]["last_exit"]) == (1, -9)
    assert rows["sync-users"]["restarts"] == 1
    wait_for(lambda: {p["name"]: p for p in status(stack)["processes"]}["sync-users"]["state"] == "healthy",
             10, "the follower healthy again")

@pytest.mark.integration
def test_logs_over_the_plan_size_are_rotated_and_traefik_goes_on_in_a_fresh_access_log(stack: dict) -> None:
    logs = stack["run_dir"] / "logs"
    access, backend = logs / "traefik-access.log", logs / "users.0.log"

    def said() -> tuple[int, int]:
        """How often the supervisor has reported each rotation done (copy complete, writer on a fresh file)."""
        log = (logs / "supervisor.log").read_text()
        return log.count("rotated traefik-access.log "), log.count("rotated users.0.log ")

    before = said()
    for path in (access, backend):  # each past log_max_mb = 1
        with open(path, "ab") as handle:
            handle.write((b"#" * 1023 + b"\n") * 1100)
    # not "users.0.log.1 exists": the copy-then-truncate creates it first and fills it after, so on a
    # loaded machine its size was read mid-copy; the supervisor's line comes once the copy is whole
    wait_for(lambda: all(now > then for now, then in zip(said(), before, strict=True)), 30,
             "both logs rotated by the supervisor")
    assert (logs / "traefik-access.log.1").exists()
    assert (logs / "users.0.log.1").stat().st_size > 1024 * 1024
    marker = f"rotated-{os.getpid()}"
    assert requests.get(f"{stack['state']['web']}/api/users?m={marker}", timeout=10).status_code == 200
    wait_for(lambda: marker in access.read_text(), 15, "the request's line in the fresh access log")
    assert access.stat().st_size < 1024 * 1024 and backend.stat().st_size < 1024 * 1024


@pytest.mark.integration
def test_redis_down_for_10s_http_keeps_working_and_pushes_resume_by_themselves(stack: dict) -> None:
    import queue
    import uuid

    import socketio

    web, run_dir = stack["state"]["web"], stack["run_dir"]
    nickname = f"r{uuid.uuid4().hex[:8]}"
    assert requests.post(f"{web}/api/users", json={"nickname": nickname, "password": "pw"},
                         timeout=10).status_code == 201
    token = requests.post(f"{web}/api/tokens", auth=(nickname, "pw"), timeout=10).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    events: queue.Queue = queue.Queue()
    client = socketio.Client(reconnection=False)
    client.on("updated_model", events.put)
    client.connect(web, transports=["websocket"], wait_timeout=10)
    supervisor = procs.read_pidfiles(run_dir)["supervisor"]
    try:
        os.kill(supervisor.pid, signal.SIGSTOP)  # paused: Redis stays down until we say so
        try:
            old = procs.read_pidfiles(run_dir)["redis"]
            os.kill(old.pid, signal.SIGKILL)
            down_until, statuses = time.monotonic() + 10, []
            while time.monotonic() < down_until:  # 10 s without Redis: HTTP keeps working
                posted = requests.post(f"{web}/api/messages", json={"source": "while redis is down"},
                                       headers=auth, timeout=10)
                statuses.append(posted.status_code)
                time.sleep(0.5)
            assert set(statuses) == {201}, statuses
        finally:
            os.kill(supervisor.pid, signal.SIGCONT)
        wait_for(lambda: procs.read_pidfiles(run_dir)["redis"].pid != old.pid
                 and procs.read_pidfiles(run_dir)["redis"].running(), 30, "redis restarted")
        began = time.monotonic()
        while time.monotonic() - began < 90:  # a listener reconnects after 1, 2, 4, 8 ... s
            source = f"after redis {uuid.uuid4().hex[:6]}"
            posted = requests.post(f"{web}/api/messages", json={"source": source}, headers=auth, timeout=10)
            assert posted.status_code == 201, posted.text
            try:
                while True:
                    event = events.get(timeout=1.0)
                    if event["class"] == "Message" and event["model"]["source"] == source:
                        break
                break
            except queue.Empty:
                continue
        else:
            pytest.fail("no push arrived within 90 s of Redis coming back")
        print(f"pushes resumed {time.monotonic() - began:.1f}s after Redis was restarted")
    finally:
        client.disconnect()


@pytest.mark.integration
def test_a_backend_that_exits_at_once_ends_crashlooping_and_the_stack_stays_up(stack: dict) -> None:
    assert "broken.0" in stack["up"] and "the supervisor retries it" in stack["up"]

    def crashlooping() -> list[dict]:
        return [i for i in instances(stack, "broken") if i["state"] == "crashlooping"]

    wait_for(crashlooping, 60, "broken.0 crashlooping")
    (broken,) = crashlooping()
    seen = time.monotonic()
    assert broken["last_exit"] == 3 and not broken["registered"] and broken["restarts"] == 4
    data = status(stack)
    assert any(p.startswith("broken.0 is crashlooping (last exit code 3)") for p in data["problems"])
    supervisor = procs.read_pidfiles(stack["run_dir"])["supervisor"]
    assert supervisor.running()
    assert requests.get(f"{stack['state']['web']}/api/users", timeout=10).status_code == 200
    log = (stack["run_dir"] / "logs" / "supervisor.log").read_text()
    assert "broken.0 is crashlooping" in log and "last lines of" in log
    # crashlooping means no more tries: still the same process BACKOFF_CAP / 4 after it was seen so
    # (the checks above count towards that time)
    time.sleep(max(0.0, seen + BACKOFF_CAP / 4 - time.monotonic()))
    assert instances(stack, "broken")[0]["pid"] == broken["pid"]


@pytest.mark.integration
def test_sigterm_leaves_the_registry_before_gunicorn_stops_accepting(stack: dict) -> None:
    url = stack["state"]["backends"]["ui"]["instances"][0]["url"]
    record = procs.read_pidfiles(stack["run_dir"])["ui.0"]
    os.kill(record.pid, signal.SIGTERM)
    wait_for(lambda: url not in [i.url for i in registry.instances(stack["etcd"], "ui")], 5,
             "ui.0 deregistered")
    # deregistered, and still serving for the moment Traefik needs to drop it
    assert procs.http_ok(url + "/healthz", timeout=0.5)
    # an instance stopped from outside is restarted like any other end
    wait_for(lambda: procs.read_pidfiles(stack["run_dir"])["ui.0"].pid != record.pid
             and procs.http_ok(url + "/healthz"), 20, "ui.0 restarted")


def scale_key_value(stack: dict, backend: str) -> str | None:
    return stack["etcd"].get(f"strangler/stack/scale/{backend}")


@pytest.mark.integration
def test_scale_refuses_bad_input_in_one_line_and_changes_nothing(stack: dict) -> None:
    before = scale_key_value(stack, "users")
    args = ("--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"]))
    for bad, says in (("users=abc", "N must be a whole number"), ("nosuch=2", "no backend 'nosuch'"),
                      ("users=-1", "N must be 0 or more"), ("users", "write BACKEND=N")):
        result = strangler("scale", bad, *args)
        assert result.returncode == 2, (bad, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert says in line and "Traceback" not in result.stderr, line
    routed = strangler("scale", "monolith=0", *args)
    assert routed.returncode == 1 and "monolith still serves" in routed.stderr and "the catch-all" in routed.stderr
    assert len(routed.stderr.strip().splitlines()) == 1
    assert scale_key_value(stack, "users") == before


@pytest.mark.integration
def test_scale_users_to_3_and_back_to_1_under_load_fails_no_request(stack: dict) -> None:
    args = ("--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"]))
    flipped = strangler("flip", "GET /api/users", "--to", "users", "--plan", str(stack["plan"]),
                        "--etcd", stack["state"]["etcd"], "--traefik-api", stack["state"]["traefik_api"])
    assert flipped.returncode == 0, flipped.stderr
    with Load(f"{stack['state']['web']}/api/users") as load:
        up = strangler("scale", "users=3", *args)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "users: 3/3 healthy" in up.stdout
        rows = instances(stack, "users")
        assert len(rows) == 3 and all(r["healthy"] and r["registered"] for r in rows), rows
        assert len({r["pid"] for r in rows}) == 3
        state = json.loads((stack["run_dir"] / "state.json").read_text())
        assert state["backends"]["users"]["desired"] == 3 and len(state["backends"]["users"]["instances"]) == 3
        served = requests.get(f"{stack['state']['traefik_api']}/api/http/services/users@etcd", timeout=5).json()
        assert sorted(s["url"] for s in served["loadBalancer"]["servers"]) == sorted(r["address"] for r in rows)
        down = strangler("scale", "users=1", *args)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "draining" in down.stdout
    (left,) = instances(stack, "users")
    assert left["name"] == "users.0"
    gone = [r for r in rows if r["name"] != "users.0"]
    for row in gone:
        assert procs._proc_starttime(row["pid"]) is None, row
        assert not (stack["run_dir"] / f"{row['name']}.pid").exists()
    assert json.loads((stack["run_dir"] / "state.json").read_text())["backends"]["users"]["desired"] == 1
    assert sum(load.codes.values()) > 50, load.codes
    assert set(load.codes) == {200}, load.codes
    log = (stack["run_dir"] / "logs" / "supervisor.log").read_text()
    assert "users.2 drained: terminated" in log and "users.1 drained: terminated" in log


def releases(stack: dict, backend: str) -> list[str]:
    """The releases ``backend``'s registered instances carry, from the registry (what ``status`` shows in
    its release column, see the last test, without a CLI start and a probe of every instance per look)."""
    return sorted(i.release for i in registry.instances(stack["etcd"], backend))


@pytest.mark.integration
def test_upgrade_users_try_roll_abort_under_load_fails_no_request(stack: dict) -> None:
    args = ("--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"]))
    assert strangler("scale", "users=2", *args).returncode == 0
    (old,) = set(releases(stack, "users"))
    bad = strangler("upgrade", "nosuch", "try", *args)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nosuch" in bad.stderr
    nothing = strangler("upgrade", "users", "abort", *args)
    assert nothing.returncode == 1 and "nothing to abort" in nothing.stderr
    with Load(f"{stack['state']['web']}/api/users") as load:
        tried = strangler("upgrade", "users", "try", "--release", "v2", *args)
        assert tried.returncode == 0, tried.stdout + tried.stderr
        assert releases(stack, "users") == sorted([old, old, "v2"])
        again = strangler("upgrade", "users", "try", "--release", "v3", *args)
        assert again.returncode == 1 and "a try of release v2 is pending" in again.stderr
        rolled = strangler("upgrade", "users", "roll", *args)
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        wait_for(lambda: releases(stack, "users") == ["v2", "v2"], 30, "only v2 left")
        assert strangler("upgrade", "users", "try", "--env", "EXTRA_SETTING=1", *args).returncode == 0
        (third,) = set(releases(stack, "users")) - {"v2"}
        aborted = strangler("upgrade", "users", "abort", *args)
        assert aborted.returncode == 0, aborted.stdout + aborted.stderr
        wait_for(lambda: releases(stack, "users") == ["v2", "v2"], 30, "the try drained")
        scaled = strangler("scale", "users=3", *args)  # new instances now start as the rolled release
        assert scaled.returncode == 0, scaled.stdout + scaled.stderr
        assert releases(stack, "users") == ["v2", "v2", "v2"]
    assert sum(load.codes.values()) > 50 and set(load.codes) == {200}, load.codes
    history = strangler("history", "--json", "--plan", str(stack["plan"]), "--etcd", stack["state"]["etcd"])
    whats = [change["what"] for change in json.loads(history.stdout)]
    assert [w.split(":")[0] for w in whats if w.startswith("upgrade")] == [
        "upgrade users try", "upgrade users roll", "upgrade users try", "upgrade users abort"]
    assert f"upgrade users abort: release {third} (from v2)" in whats
    # left at 3 (no scale back to 1: draining two proves nothing the scale test does not)


SIO_VERSION = (REPO / "monolith" / "static" / "vendor" / "socket.io-client" / "VERSION").read_text().strip()
NODE_CLIENT = REPO / "tests" / "support" / "sio_node_client.js"


@pytest.fixture(scope="module")
def sio_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the official socket.io-client (the version the page vendors) installed by npm."""
    folder = tmp_path_factory.mktemp("sio-client")
    try:
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent",
                        f"socket.io-client@{SIO_VERSION}"], cwd=folder, check=True,
                       capture_output=True, timeout=180)
    except (OSError, subprocess.SubprocessError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"npm cannot install socket.io-client@{SIO_VERSION}: {exc}")
    return folder


def register(web: str) -> str:
    nickname = f"n{os.urandom(4).hex()}"
    created = requests.post(f"{web}/api/users", json={"nickname": nickname, "password": "pw"}, timeout=10)
    assert created.status_code == 201, created.text
    answer = requests.post(f"{web}/api/tokens", auth=(nickname, "pw"), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


def node_clients(folder: Path, web: str, token: str, modes: list[str]) -> list[dict]:
    """Connect one official client per mode, post a message once all are connected; their results."""
    clients = [subprocess.Popen(["node", str(NODE_CLIENT), str(folder), web, mode, "20000"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for mode in modes]
    try:
        # each prints {"ready": true} once connected, or its result line when it failed
        firsts = [client.stdout.readline() for client in clients]
        posted = requests.post(f"{web}/api/messages", json={"source": "sticky?"},
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert posted.status_code == 201, posted.text
        results = []
        for client, first in zip(clients, firsts, strict=True):
            out, _ = client.communicate(timeout=40)
            lines = [line for line in (first, *out.splitlines()) if line.startswith("{") and "ready" not in line]
            results.append(json.loads(lines[-1]) if lines else {"connected": False, "errors": [out]})
        return results
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait(5)


@pytest.mark.integration
def test_the_official_client_works_against_2_and_3_socketio_instances(stack: dict, sio_client: Path) -> None:
    args = ("--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"]))
    flipped = strangler("flip", "PREFIX /socket.io/", "--to", "socketio", "--plan", str(stack["plan"]),
                        "--etcd", stack["state"]["etcd"], "--traefik-api", stack["state"]["traefik_api"])
    assert flipped.returncode == 0, flipped.stderr
    service = requests.get(f"{stack['state']['traefik_api']}/api/http/services/socketio@etcd", timeout=5).json()
    assert service["loadBalancer"]["sticky"]["cookie"]["name"] == "strangler_sticky_socketio"
    web, token = stack["state"]["web"], register(stack["state"]["web"])
    for count in (2, 3):
        scaled = strangler("scale", f"socketio={count}", *args)
        assert scaled.returncode == 0, scaled.stdout + scaled.stderr
        results = node_clients(sio_client, web, token, ["default"] * 3 + ["polling"] * 3)
        for mode, result in zip(["default"] * 3 + ["polling"] * 3, results, strict=True):
            assert result["connected"] and result["events"] >= 1 and not result["errors"], (count, mode, result)
            assert result["transport"] == ("polling" if mode == "polling" else "websocket"), result
    # left at 3: a scale back to 1 waited ~8 s for two drains and proved nothing the scale test does not;
    # the module's `down` drains them beside the rest


@pytest.mark.integration
def test_each_instance_carries_its_release_in_status_etcd_and_healthz(stack: dict) -> None:
    registered = {i.url: i.release for i in registry.instances(stack["etcd"])}
    rows = [i for row in status(stack)["backends"] for i in row["instances"] if i["registered"]]
    assert rows
    for row in rows:
        healthz = requests.get(row["address"] + "/healthz", timeout=5).json()
        assert re.fullmatch(r"[0-9a-f]{10}|v2", row["release"]), row  # a label, or the one upgraded to
        assert healthz["release"] == registered[row["address"]] == row["release"], row
