"""strangler.stack.startup: parts started as their needs allow, polled together, reported in order.

The loop's rules on real child processes (no stack), then two real stacks
through ``strangler up``: two backends that can only become healthy when
their health checks are polled together, and a monolith that dies while
its siblings are starting, after which every process ``up`` started is gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from strangler.plan import load_plan
from strangler.stack import procs
from strangler.stack.lifecycle import Stack, StackError
from strangler.stack.startup import Part, bring_up

STRANGLER = str(Path(sys.executable).parent / "strangler")
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
DIES = [sys.executable, "-c", "import sys; print('first line'); print('cannot open the door', flush=True); "
        "sys.exit(3)"]


def started(tmp_path: Path, name: str, argv: list[str], log: list[procs.Proc]) -> list[procs.Proc]:
    proc = procs.Proc(name, argv, tmp_path / f"{name}.log").start()
    log.append(proc)
    return [proc]


@pytest.fixture
def children() -> list[procs.Proc]:
    """Every process a test starts, stopped afterwards."""
    started_procs: list[procs.Proc] = []
    yield started_procs
    for proc in started_procs:
        proc.stop(timeout=2)


def test_parts_start_once_their_needs_are_ready_and_lines_come_in_order() -> None:
    events: list[str] = []
    gate = threading.Event()

    def part(name: str, needs: tuple[str, ...] = (), ready=lambda: True) -> Part:
        return Part(name, start=lambda: events.append(f"start {name}") or [],
                    checks=[(name, ready)], needs=needs, describe=lambda: f"at {name}")

    lines: list[str] = []
    slow = part("slow", ready=gate.is_set)
    parts = [slow, part("quick"), part("after", needs=("quick",)), part("last", needs=("slow",))]
    timer = threading.Timer(0.3, gate.set)
    timer.start()
    seconds = bring_up(parts, timeout=10, echo=lines.append)
    # independent parts start together, a dependent one only once its need is ready
    assert events[:2] == ["start slow", "start quick"]
    assert events.index("start after") < events.index("start last")
    # "quick" and "after" were ready long before "slow": their lines still wait for it
    assert [line.split()[0] for line in lines] == ["slow", "quick", "after", "last"]
    assert lines[0].startswith("slow ready (") and lines[0].endswith(") at slow")
    assert seconds["slow"] >= 0.25 > seconds["quick"]


def test_a_required_part_that_ends_fails_at_once_in_one_line_with_its_last_log_lines(
        tmp_path: Path, children: list[procs.Proc]) -> None:
    parts = [Part("sleeper", start=lambda: started(tmp_path, "sleeper", SLEEPER, children),
                  checks=[("never", lambda: False)]),
             Part("door", start=lambda: started(tmp_path, "door", DIES, children),
                  checks=[("never", lambda: False)])]
    began = time.monotonic()
    with pytest.raises(procs.StartupError) as failure:
        bring_up(parts, timeout=30)
    message = str(failure.value)
    assert time.monotonic() - began < 10  # not the 30 s timeout: its end is noticed at once
    assert message.startswith("door exited with code 3 while starting; read ")
    assert str(tmp_path / "door.log") in message
    assert message.endswith("last lines: first line | cannot open the door") and "\n" not in message


def test_an_optional_part_that_ends_is_reported_and_the_rest_comes_up(
        tmp_path: Path, children: list[procs.Proc]) -> None:
    lines: list[str] = []
    parts = [Part("door", start=lambda: started(tmp_path, "door", DIES, children),
                  checks=[("never", lambda: False)], optional=True),
             Part("fine", checks=[("fine", lambda: True)])]
    bring_up(parts, timeout=30, echo=lines.append)
    assert lines[0].startswith("door exited with code 3 while starting")
    assert lines[0].endswith("; the supervisor retries it")
    assert lines[1].startswith("fine ready")


def test_background_work_runs_beside_the_loop_and_its_error_ends_the_start() -> None:
    def fails() -> None:
        time.sleep(0.1)
        raise ValueError("the schema of users differs")

    ran = Part("work", background=lambda: time.sleep(0.2))
    assert bring_up([ran, Part("next", needs=("work",))], timeout=10)["work"] >= 0.2
    with pytest.raises(ValueError, match="schema of users differs"):
        bring_up([Part("work", background=fails)], timeout=10)


def test_a_need_nothing_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="b needs c, which nothing starts"):
        bring_up([Part("a"), Part("b", needs=("c",))], timeout=1)


# ---- real stacks ---------------------------------------------------------------------------

STACK = """
[strangler]
strategy = "incremental"
run_dir = "run"
monolith = "monolith"

[stack]
web_port = 0
dashboard_port = 0
etcd_port = 0
etcd_peer_port = 0
redis_port = 0
internal_port = 0
console_port = 0

[backends.monolith]
command = "{monolith}"
health = "/healthz"
database = "sqlite:///{{run_dir}}/data/monolith.sqlite"
app = "monolith:create_app"

[[endpoints]]
endpoint = "GET /healthz"
"""

MONOLITH = "gunicorn -c python:monolith.gunicorn_conf --bind {host}:{port} monolith.wsgi:app"

# Healthy only once the partner's health has been asked too: with one health
# wait after the other, the first of the pair would wait for ever.
PAIR = '''
import os
from pathlib import Path

here = Path(os.environ["PAIR_DIR"])


def app(environ, start_response):
    if environ["PATH_INFO"] == "/healthz":
        (here / (os.environ["PAIR_SELF"] + ".asked")).touch()
        if not (here / (os.environ["PAIR_OTHER"] + ".asked")).exists():
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"waiting for my partner"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


def pair_backend(name: str, other: str, where: Path) -> str:
    return (f'\n[backends.{name}]\n'
            f'command = "gunicorn -c python:router.gunicorn_hooks --bind {{host}}:{{port}} pair:app"\n'
            f'health = "/healthz"\n'
            f'env = {{ PAIR_SELF = "{name}", PAIR_OTHER = "{other}", PAIR_DIR = "{where}" }}\n')


@pytest.mark.integration
def test_backends_whose_health_needs_each_other_come_up_together(tmp_path: Path) -> None:
    (tmp_path / "pair.py").write_text(PAIR)
    markers = tmp_path / "markers"
    markers.mkdir()
    plan = tmp_path / "strangler.toml"
    plan.write_text(STACK.format(monolith=MONOLITH) + pair_backend("left", "right", markers)
                    + pair_backend("right", "left", markers))
    run_dir = tmp_path / "run"
    # polled one after the other, the first of the pair waits out up's timeout (60 s), then up fails
    result = subprocess.run([STRANGLER, "up", "--detach", "--plan", str(plan), "--run-dir", str(run_dir)],
                            capture_output=True, text=True, timeout=150)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        lines = [line.split()[0] for line in result.stdout.splitlines() if " ready (" in line]
        assert lines == ["etcd", "redis", "traefik", "monolith.0", "left.0", "right.0", "console"]
        state = json.loads((run_dir / "state.json").read_text())
        assert list(state["backends"]) == ["monolith", "left", "right"]
    finally:
        subprocess.run([STRANGLER, "down", "--run-dir", str(run_dir)], capture_output=True, timeout=120)


# Starts, says where it is, and waits for ever (it never registers: never healthy).
SIBLING = """
import os, sys, time
from pathlib import Path
Path(sys.argv[1]).write_text(str(os.getpid()))
time.sleep(300)
"""

# The monolith dies once the sibling has started: after `up` started everything else.
DYING = """
import sys, time
from pathlib import Path
deadline = time.monotonic() + 60
while not Path(sys.argv[1]).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
print("monolith: starting", flush=True)
print("monolith: the database is on fire", flush=True)
sys.exit(3)
"""


@pytest.mark.integration
def test_a_monolith_dying_while_starting_fails_in_one_line_and_every_process_started_is_gone(
        tmp_path: Path) -> None:
    (tmp_path / "sibling.py").write_text(SIBLING)
    (tmp_path / "dying.py").write_text(DYING)
    sibling_pid = tmp_path / "sibling.pid"
    text = STACK.format(monolith=f"python dying.py {sibling_pid}") + (
        f'\n[backends.sibling]\ncommand = "python sibling.py {sibling_pid}"\nhealth = "/healthz"\n')
    (tmp_path / "strangler.toml").write_text(text)
    plan = load_plan(tmp_path / "strangler.toml")
    run_dir = tmp_path / "run"
    seen: dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:  # every pid file `up` writes, while it runs
        while not done.is_set():
            seen.update({name: r.pid for name, r in procs.read_pidfiles(run_dir).items()})
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(StackError) as failure:
            Stack(plan, run_dir, timeout=60).up()
    finally:
        done.set()
        watcher.join(5)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("monolith.0 exited with code 3 while starting; read "
                              f"{run_dir / 'logs' / 'monolith.0.log'}; last lines: ")
    assert "monolith: the database is on fire" in message
    assert message.endswith("; stopped everything it had started")
    # the sibling had started (it is what the monolith waited for), as had etcd and Redis
    # (Traefik too, unless the monolith ended before the route table was written)
    assert {"etcd", "redis", "sibling.0", "monolith.0"} <= set(seen)
    assert seen["sibling.0"] == int(sibling_pid.read_text())
    for name, pid in seen.items():
        assert procs._proc_starttime(pid) is None, f"{name} (pid {pid}) still runs"
    assert not list(run_dir.glob("*.pid")) and not (run_dir / "state.json").exists()
