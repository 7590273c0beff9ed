"""strangler up / down / status: a real local stack (etcd, Redis, Traefik, gunicorn) per module.

One stack, started through the CLI with ``up --detach`` from a copy of the
repository's plan on free ports, serves most tests; a foreground ``up`` with a
tiny extra backend checks Ctrl-C; a broken monolith checks the clean-up path.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
import socketio

from router import registry
from router.etcd import Etcd
from strangler.plan import Plan, load_plan
from strangler.stack.lifecycle import Stack, StackError, backend_launches, procs
from strangler.stack.warm import SWITCH as COLD

REPO = Path(__file__).resolve().parents[2]
STRANGLER = str(Path(sys.executable).parent / "strangler")
SECRETS = {"SECRET_KEY": "s" * 64, "JWT_SECRET_KEY": "j" * 64}


def plan_data(**monolith: object) -> dict:
    """A small valid plan: the monolith, a service that starts and one that does not."""
    return {
        "strangler": {"strategy": "incremental", "run_dir": "run"},
        "backends": {
            "monolith": {
                "command": "gunicorn --bind {host}:{port} monolith.wsgi:app",
                "health": "/healthz",
                "app": "monolith:create_app",
                "database": "sqlite:///{run_dir}/data/{name}.sqlite",
                **monolith,
            },
            "users": {
                "command": "serve-users --port {port} --n {instance}",
                "health": "/ping",
                "instances": 2,
                "env": {"STRANGLER_ENV": "production", "EXTRA": "1"},
                "endpoints": ["GET /api/users", "PREFIX /static/"],
            },
            "later": {"command": "later {port}", "health": "/healthz", "start": False},
        },
        "endpoints": [{"endpoint": "GET /api/users"}, {"endpoint": "GET /healthz"}],
    }


def test_backend_launches_build_each_instance_command_and_env(tmp_path: Path) -> None:
    plan = Plan.from_data(plan_data(), tmp_path / "strangler.toml")
    launches = backend_launches(plan, {"monolith": [5001], "users": [6001, 6002]},
                                etcd_url="http://127.0.0.1:1", redis_url="redis://127.0.0.1:2/0",
                                secrets=SECRETS, lb_url="http://127.0.0.1:3")
    assert [launch.name for launch in launches] == ["monolith.0", "users.0", "users.1"]
    mono, first, second = launches
    assert mono.argv == ["gunicorn", "--bind", "127.0.0.1:5001", "monolith.wsgi:app"]
    assert second.argv == ["serve-users", "--port", "6002", "--n", "1"]
    assert mono.env["DATABASE_URL"] == f"sqlite:///{plan.run_dir}/data/monolith.sqlite"
    assert "DATABASE_URL" not in first.env
    assert second.env["STRANGLER_INSTANCE_URL"] == second.url == "http://127.0.0.1:6002"
    assert (first.env["STRANGLER_BACKEND"], first.env["STRANGLER_HEALTH_PATH"]) == ("users", "/ping")
    assert mono.env["STRANGLER_ENV"] == "development"
    assert first.env["STRANGLER_ENV"] == "production" and first.env["EXTRA"] == "1"  # the plan's env wins
    for launch in launches:  # one set of secrets, so a token from one backend works on every other
        assert {k: launch.env[k] for k in SECRETS} == SECRETS
        assert launch.env["SOCKETIO_MESSAGE_QUEUE"] == "redis://127.0.0.1:2/0"
        assert launch.env["STRANGLER_LB_URL"] == "http://127.0.0.1:3"  # services call each other via Traefik
        assert launch.env["STRANGLER_DATA_DIR"] == str(plan.run_dir / "data")
        assert launch.log_path == plan.run_dir / "logs" / f"{launch.name}.log"
        assert "STRANGLER_WRITE_THROUGH" not in launch.env  # no data linked: no write-through


def test_backend_launches_write_through_between_the_monolith_and_linked_services(tmp_path: Path) -> None:
    plan = load_plan(free_ports_plan(tmp_path))
    ports = {name: [5000 + i] for i, name in enumerate(plan.backends)}
    launches = {launch.backend: launch.env for launch in backend_launches(
        plan, ports, etcd_url="e", redis_url="r", secrets=SECRETS, linked=["users", "messages"])}
    peers = {name: json.loads(env["STRANGLER_WRITE_THROUGH"]) for name, env in launches.items()
             if "STRANGLER_WRITE_THROUGH" in env}
    mono, users, messages = (plan.database_url(n) for n in ("monolith", "users", "messages"))
    assert {name: {t: e["peers"] for t, e in tables.items()} for name, tables in peers.items()} == {
        "monolith": {"users": [users], "messages": [messages]},
        "users": {"users": [mono]}, "messages": {"messages": [mono]}}
    # each side inserts from its own id lane: the monolith odd ids, the services even ones
    assert {name: {t: e["lane"] for t, e in tables.items()} for name, tables in peers.items()} == {
        "monolith": {"users": [1, 2], "messages": [1, 2]},
        "users": {"users": [2, 2]}, "messages": {"messages": [2, 2]}}


# ---- a real stack ------------------------------------------------------------------------


def strangler(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real CLI (a separate process, as a user would)."""
    return subprocess.run([STRANGLER, *args], capture_output=True, text=True, timeout=timeout)


def free_ports_plan(tmp_path: Path, text: str | None = None) -> Path:
    """A copy of the repository's plan (or ``text``) with every [stack] port 0 (free ports)."""
    text = text or (REPO / "strangler.toml").read_text()
    text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", text, flags=re.M)
    path = tmp_path / "strangler.toml"
    path.write_text(text)
    return path


def starting_only(keep: set[str], text: str | None = None) -> str:
    """The repository's plan (or ``text``) with ``start = false`` for every backend not in ``keep``."""
    text = text or (REPO / "strangler.toml").read_text()
    return re.sub(r"^\[backends\.(\w+)\]\n", lambda m: m[0] if m[1] in keep else f"{m[0]}start = false\n",
                  text, flags=re.M)


def processes_under(run_dir: Path) -> list[int]:
    """PIDs whose command line mentions ``run_dir`` (etcd, Redis, Traefik started from it)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(run_dir).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


def gone(pid: int, timeout: float = 10) -> bool:
    """True once ``pid`` has ended (zombies count as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs._proc_starttime(pid) is None:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """``strangler up --detach`` of the repository's plan on free ports; ``down`` afterwards."""
    base = tmp_path_factory.mktemp("stack")
    # The monolith starts cold (a fresh interpreter), so its environment can be read in /proc;
    # every other Python part is forked warm (strangler.stack.warm).
    plan = free_ports_plan(base, (REPO / "strangler.toml").read_text().replace(
        "[backends.monolith]\n", f"[backends.monolith]\nenv = {{ {COLD} = \"0\" }}\n"))
    run_dir = base / "run"
    began = time.monotonic()
    result = strangler("up", "--detach", "--plan", str(plan), "--run-dir", str(run_dir))
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        state = json.loads((run_dir / "state.json").read_text())
        yield {"state": state, "run_dir": run_dir, "plan": plan, "up": result.stdout,
               "seconds": time.monotonic() - began}
    finally:
        strangler("down", "--run-dir", str(run_dir))
        for record in procs.read_pidfiles(run_dir).values():  # only if down itself failed
            record.stop()


@pytest.mark.integration
def test_up_prints_the_urls_and_progress(stack: dict) -> None:
    out, state = stack["up"], stack["state"]
    plan = load_plan(stack["plan"])
    started = [f"{name}.0" for name, b in plan.backends.items() if b.start]
    for part in ("etcd", "redis", "traefik", *started):
        assert re.search(rf"^{re.escape(part)} ready \(\d+\.\d+s\)", out, re.M), out
    assert f"app:       {state['web']}/" in out
    assert re.search(r"^console ready \(\d+\.\d+s\)", out, re.M), out
    assert f"console:   {state['console']}" in out and state["console"].startswith("http://127.0.0.1:")
    assert requests.get(state["dashboard"], timeout=5).status_code == 200
    idle = [name for name, b in plan.backends.items() if not b.start]
    assert ("not started: " + ", ".join(idle) in out) if idle else "not started" not in out
    assert oct((stack["run_dir"] / "secrets.json").stat().st_mode & 0o777) == "0o600"
    secrets = json.loads((stack["run_dir"] / "secrets.json").read_text())
    assert not any(value in out for value in secrets.values())


@pytest.mark.integration
def test_the_app_answers_through_traefik(stack: dict) -> None:
    web = stack["state"]["web"]
    users = requests.get(f"{web}/api/users", timeout=10)
    assert users.status_code == 200 and "users" in users.json()
    page = requests.get(f"{web}/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")


def register(web: str) -> str:
    nickname = f"u{uuid.uuid4().hex[:8]}"
    created = requests.post(f"{web}/api/users", json={"nickname": nickname, "password": "pw"}, timeout=10)
    assert created.status_code == 201, created.text
    answer = requests.post(f"{web}/api/tokens", auth=(nickname, "pw"), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


@pytest.mark.integration
def test_socketio_websocket_through_traefik_gets_updated_model(stack: dict) -> None:
    web = stack["state"]["web"]
    token = register(web)
    events: queue.Queue = queue.Queue()
    client = socketio.Client(reconnection=False)
    client.on("updated_model", events.put)
    client.connect(web, transports=["websocket"], wait_timeout=10)
    try:
        source = f"through traefik {uuid.uuid4().hex[:6]}"
        posted = requests.post(f"{web}/api/messages", json={"source": source},
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert posted.status_code == 201, posted.text
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            event = events.get(timeout=max(0.1, deadline - time.monotonic()))
            if event["class"] == "Message" and event["model"]["source"] == source:
                break
        else:
            pytest.fail("no updated_model for the posted message")
    finally:
        client.disconnect()


@pytest.mark.integration
def test_the_monolith_is_registered_and_revocations_live_in_etcd(stack: dict) -> None:
    state = stack["state"]
    etcd = Etcd(state["etcd"])
    urls = [i.url for i in registry.instances(etcd, "monolith")]
    assert urls == [state["backends"]["monolith"]["instances"][0]["url"]]
    token = register(state["web"])
    revoked = requests.delete(f"{state['web']}/api/tokens",
                              headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert revoked.status_code == 204, revoked.text
    keys, _ = etcd.get_prefix("strangler/revoked/jti/")
    assert keys, "the revocation did not reach etcd"


@pytest.mark.integration
def test_python_parts_are_forked_warm_by_one_launcher_and_one_asked_to_starts_cold(stack: dict) -> None:
    records = procs.read_pidfiles(stack["run_dir"])
    supervisor = records.pop("supervisor").pid
    parents = {name: psutil.Process(record.pid).ppid() for name, record in records.items()}
    launcher = parents["users.0"]
    assert launcher != supervisor and psutil.Process(launcher).ppid() == supervisor
    assert str(stack["run_dir"]) in psutil.Process(launcher).cmdline()  # ps tells whose it is
    plan = load_plan(stack["plan"])
    python_parts = {f"{name}.0" for name, b in plan.backends.items() if b.start} - {"monolith.0"}
    python_parts |= {"console", "controller", *(name for name in records if name.startswith("sync-"))}
    assert {name for name, parent in parents.items() if parent == launcher} == python_parts
    # the monolith's env says STRANGLER_WARM_START=0; etcd, Redis and Traefik are not Python
    assert {name for name, parent in parents.items() if parent == supervisor} == \
        {"monolith.0", "etcd", "redis", "traefik"}
    assert psutil.Process(records["users.0"].pid).cmdline()[0] == "gunicorn: master [strangler-users]"
    assert requests.get(records["users.0"].url + "/healthz", timeout=10).status_code == 200


def environ_of(pid: int) -> dict[str, str]:
    """A process's environment as the kernel shows it (our own processes only).

    Only a process started cold shows its own: a warm one shows the launcher's, from its exec.
    """
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


@pytest.mark.integration
def test_redis_wants_the_password_only_the_backends_environment_holds(stack: dict) -> None:
    import redis

    state, run_dir = stack["state"], stack["run_dir"]
    port = int(state["redis"].rsplit(":", 1)[1].split("/")[0])
    assert not procs.redis_ping(port)  # an anonymous client gets NOAUTH
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(state["redis"]).ping()
    pid = state["backends"]["monolith"]["instances"][0]["pid"]
    url = environ_of(pid)["SOCKETIO_MESSAGE_QUEUE"]
    password = redis.connection.parse_url(url)["password"]
    assert len(password) >= 24 and redis.Redis.from_url(url).ping()
    # nowhere else: not in state.json, nor on any command line of the stack
    assert password not in (run_dir / "state.json").read_text()
    for record in procs.read_pidfiles(run_dir).values():
        assert password.encode() not in Path(f"/proc/{record.pid}/cmdline").read_bytes(), record.name


@pytest.mark.integration
def test_status_lists_backends_instances_and_routes(stack: dict) -> None:
    result = strangler("status", "--json", "--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"]))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {row["backend"]: row for row in data["backends"]}
    (instance,) = rows["monolith"]["instances"]
    assert instance["address"] == stack["state"]["backends"]["monolith"]["instances"][0]["url"]
    assert instance["healthy"] and instance["traefik"] == "UP" and instance["age"] >= 0
    plan = load_plan(stack["plan"])
    for name, backend in plan.backends.items():
        assert (rows[name]["state"] == "not started") == (not backend.start), name
    # every planned endpoint (prefixes too) starts where the plan puts it: on the
    # monolith, or on its service for the endpoints a service `serves` itself
    starts = Counter(r.initial for r in plan.routes())
    assert {(row["backend"], row["state"]): row["endpoints"] for row in data["routes"]} == {
        (backend, "monolith" if backend == plan.monolith else "flipped"): count
        for backend, count in starts.items()}
    assert data["strategy"] == plan.strategy
    table = strangler("status", "--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"]))
    assert "monolith" in table.stdout and instance["address"].removeprefix("http://") in table.stdout
    assert "healthy" in table.stdout


@pytest.mark.integration
def test_up_links_the_data_and_status_shows_each_follower_and_its_lag(stack: dict) -> None:
    assert re.search(r"^data ready \(\d+\.\d+s\) users, messages linked$", stack["up"], re.M), stack["up"]
    state = stack["state"]
    links, _ = Etcd(state["etcd"]).get_prefix("strangler/data/links/")
    assert set(links) == {"strangler/data/links/users", "strangler/data/links/messages"}
    register(state["web"])  # on the monolith, written through to the users service's database

    def data_rows() -> dict[tuple[str, str], dict]:
        result = strangler("status", "--json", "--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"]))
        return {(r["service"], r["direction"]): r for r in json.loads(result.stdout)["data"]}

    rows: dict[tuple[str, str], dict] = {}

    def passed() -> bool:  # every direction's follower has made a pass and measured its lag
        rows.update(data_rows())
        return len(rows) == 4 and all(r["last_pass_age"] is not None and r["lag"] is not None
                                      for r in rows.values())

    procs.wait_until(passed, 20, "a pass of every follower", interval=0.2)
    assert set(rows) == {("users", "monolith -> users"), ("users", "users -> monolith"),
                         ("messages", "monolith -> messages"), ("messages", "messages -> monolith")}
    for row in rows.values():
        assert row["follower"] == "running" and row["error"] is None, row
        assert row["last_pass_age"] is not None and row["last_pass_age"] < 5 and row["lag"] is not None, row
    table = strangler("status", "--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"])).stdout
    assert "data (linked with the monolith)" in table and "users -> monolith" in table


@pytest.mark.integration
def test_the_run_dir_is_the_owners_only(stack: dict) -> None:
    # after a registration and some follower passes: databases, logs, pid files,
    # state.json, sync watermarks, etcd's and Redis's files all exist by now
    register(stack["state"]["web"])
    run_dir = stack["run_dir"]
    procs.wait_until(lambda: list(run_dir.glob("sync/*.json")), 10, "the followers' first watermarks")
    paths = [run_dir, *run_dir.rglob("*")]
    names = {p.relative_to(run_dir).as_posix() for p in paths}
    assert {"state.json", "etcd.pid", "logs", "data", "data/monolith.sqlite", "data/users.sqlite"} <= names
    shared = [f"{p.relative_to(run_dir)} {oct(p.stat().st_mode & 0o777)}" for p in paths
              if not p.is_symlink() and p.exists() and p.stat().st_mode & 0o077]
    assert shared == [], "readable by others"


@pytest.mark.integration
def test_a_second_up_with_the_same_plan_changes_nothing(stack: dict) -> None:
    before = {name: r.pid for name, r in procs.read_pidfiles(stack["run_dir"]).items()}
    result = strangler("up", "--detach", "--plan", str(stack["plan"]), "--run-dir", str(stack["run_dir"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "nothing to do: the stack matches the plan"
    assert {name: r.pid for name, r in procs.read_pidfiles(stack["run_dir"]).items()} == before
    assert procs.read_pidfiles(stack["run_dir"])["etcd"].running()


@pytest.mark.integration
def test_a_taken_port_is_named_and_nothing_starts(stack: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = strangler("up", "--detach", "--plan", str(stack["plan"]), "--run-dir", str(run_dir),
                           "--redis-port", str(port))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert f"port {port} (redis_port) is already in use" in line and "--redis-port" in line
    assert not list(run_dir.glob("*.pid")) and not (run_dir / "state.json").exists()
    assert processes_under(run_dir) == []


@pytest.mark.integration
def test_up_starts_the_promotion_controller_holding_its_key(stack: dict) -> None:
    from router.etcd import Etcd
    from strangler.promote.records import controller_alive

    record = procs.read_pidfiles(stack["run_dir"])["controller"]
    state = json.loads((stack["run_dir"] / "state.json").read_text())
    holder = controller_alive(Etcd(state["etcd"]))
    assert record.running() and holder and holder["pid"] == record.pid


@pytest.mark.integration
def test_down_stops_every_pid_and_reports(stack: dict) -> None:
    # the module's last test: it takes the stack down
    records = procs.read_pidfiles(stack["run_dir"])
    plan = load_plan(stack["plan"])
    started = {f"{name}.0" for name, b in plan.backends.items() if b.start}
    followers = {f"sync-{name}" for name in plan.data_services()}  # one per linked service
    assert followers == {"sync-users", "sync-messages"}
    assert set(records) == {"supervisor", "etcd", "redis", "traefik", "console", "controller"} | started | followers
    result = strangler("down", "--run-dir", str(stack["run_dir"]))
    assert result.returncode == 0, result.stderr
    for name, record in records.items():
        assert f"stopped {name} (pid {record.pid}): terminated" in result.stdout
        assert gone(record.pid), name
    assert not list(stack["run_dir"].glob("*.pid")) and not (stack["run_dir"] / "state.json").exists()
    again = strangler("down", "--run-dir", str(stack["run_dir"]))
    assert again.returncode == 0 and "no stack is running" in again.stdout


TINY = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"tiny " + environ["PATH_INFO"].encode()]
'''


class Output:
    """Collects a subprocess's stdout in a thread, so the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True)
        self.thread.start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, marker: str, timeout: float = 90) -> None:
        """Return once a line contains ``marker``; fail with what was read otherwise."""
        deadline = time.monotonic() + timeout
        while marker not in self.text:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                pytest.fail(f"no {marker!r} from strangler up: {self.text}")
            time.sleep(0.1)

    def rest(self, timeout: float = 60) -> str:
        """Everything, once the process has ended."""
        self.proc.wait(timeout)
        self.thread.join(5)
        return self.text


@pytest.mark.integration
def test_foreground_up_with_an_extra_backend_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    (tmp_path / "tiny.py").write_text(TINY)
    # the monolith and one linked service (its follower too) besides tiny: every kind of process the
    # stack runs, without the other services (they only make `up` and the stop longer)
    text = starting_only({"monolith", "users"}) + (
        '\n[backends.tiny]\ncommand = "gunicorn -c python:router.gunicorn_hooks --bind {host}:{port} tiny:app"\n'
        'health = "/healthz"\ninstances = 2\n')
    plan = free_ports_plan(tmp_path, text)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([STRANGLER, "up", "--plan", str(plan), "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    try:
        output.wait_for("press Ctrl-C to stop")
        state = json.loads((run_dir / "state.json").read_text())
        urls = sorted(i["url"] for i in state["backends"]["tiny"]["instances"])
        assert sorted(i.url for i in registry.instances(Etcd(state["etcd"]), "tiny")) == urls
        served = requests.get(f"{state['traefik_api']}/api/http/services/tiny@etcd", timeout=5).json()
        assert sorted(server["url"] for server in served["loadBalancer"]["servers"]) == urls
        records = procs.read_pidfiles(run_dir)
        assert {"tiny.0", "tiny.1", "monolith.0", "users.0", "sync-users", "etcd", "traefik"} <= set(records)
        os.kill(records["tiny.1"].pid, signal.SIGKILL)  # a crash is reported and restarted
        crashed = f"tiny.1 (pid {records['tiny.1'].pid}) exited with code -9; read {run_dir / 'logs' / 'tiny.1.log'}"
        output.wait_for(crashed, timeout=10)
        output.wait_for("tiny.1 healthy", timeout=30)
        assert requests.get(f"{state['web']}/api/users", timeout=10).status_code == 200
        restarted = procs.read_pidfiles(run_dir)["tiny.1"]
        assert restarted.pid != records["tiny.1"].pid
        proc.send_signal(signal.SIGINT)
        out = output.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
        for record in procs.read_pidfiles(run_dir).values():
            record.stop()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    records["tiny.1"] = restarted
    for name, record in records.items():
        if name == "supervisor":
            continue  # the foreground `up` itself
        assert f"stopped {name} (pid {record.pid}): terminated" in out
        assert gone(record.pid), name
    assert not list(run_dir.glob("*.pid")) and not (run_dir / "state.json").exists()


@pytest.mark.integration
def test_a_failing_backend_stops_what_was_started(tmp_path: Path) -> None:
    text = (REPO / "strangler.toml").read_text().replace(
        "gunicorn -c python:monolith.gunicorn_conf --bind {host}:{port} monolith.wsgi:app",
        "python -c 'raise SystemExit(3)'")
    # one linked service besides the monolith: its instance is stopped too, and the data is linked
    plan = load_plan(free_ports_plan(tmp_path, starting_only({"monolith", "users"}, text)))
    run_dir = tmp_path / "run"
    lines: list[str] = []
    with pytest.raises(StackError) as failure:
        Stack(plan, run_dir, echo=lines.append, timeout=30).up()
    message = str(failure.value)
    assert "monolith.0" in message and "exited with code 3" in message
    assert str(run_dir / "logs" / "monolith.0.log") in message and "\n" not in message
    started = {line.split()[0] for line in lines if not line.startswith("data")}
    # these had started (and the data was linked): the monolith waits for Redis and the data link
    # (etcd), not for Traefik, which may or may not have been ready when it failed
    assert {"etcd", "redis"} <= started <= {"etcd", "redis", "traefik"}, lines
    assert not list(run_dir.glob("*.pid")) and not (run_dir / "state.json").exists()
    assert processes_under(run_dir) == []


@pytest.mark.integration
def test_up_after_a_killed_stack_clears_its_pid_files_and_registrations(tmp_path: Path) -> None:
    # the monolith is the registration checked: the services would only make both ups longer
    plan = load_plan(free_ports_plan(tmp_path, starting_only({"monolith"})))
    assert [name for name, b in plan.backends.items() if b.start] == ["monolith"]
    run_dir = tmp_path / "run"
    first = Stack(plan, run_dir)
    first.up()
    killed = procs.read_pidfiles(run_dir)
    for record in killed.values():
        os.kill(record.pid, signal.SIGKILL)
    for proc in first.procs.values():
        proc.popen.wait(10)  # reap them, as the shell of a killed `up` would
    lines: list[str] = []
    second = Stack(plan, run_dir, echo=lines.append)
    try:
        state = second.up()
        assert lines[0] == f"removed {len(killed)} stale pid file(s) of a stack that did not stop cleanly"
        (instance,) = registry.instances(Etcd(state["etcd"]), "monolith")
        assert instance.url == state["backends"]["monolith"]["instances"][0]["url"]
    finally:
        second.stop()
