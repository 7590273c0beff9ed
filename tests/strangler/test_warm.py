"""Warm starts (strangler.stack.warm): a real launcher process forks real programs.

Each test starts programs through the launcher as the stack does and checks
what a fresh interpreter would give them (argv, cwd, environment, umask,
stdin, exit status, exit handlers), what falls back to a cold start, and
that a launcher that has gone costs nothing but the warmth.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from strangler.stack import procs
from strangler.stack.warm import SWITCH, Forked, Launcher, env_allows, warm_program

PROGRAM = textwrap.dedent("""
    import atexit, os, sys
    atexit.register(lambda: print("exit handler ran", flush=True))
    print("argv", sys.argv[1:])
    print("cwd", os.getcwd())
    print("path0", sys.path[0])
    print("env", os.environ.get("WARM_TEST"), "PARENT_ONLY" in os.environ)
    print("umask", oct(os.umask(0)))
    print("stdin", repr(sys.stdin.read()))
    print("main", __name__)
    sys.exit(int(sys.argv[1]))
""")
SLEEPER = "import time\nwhile True:\n    time.sleep(1)\n"
FORKER = textwrap.dedent("""
    import atexit, os, sys
    pid = os.fork()
    if pid == 0:
        atexit.register(lambda: print("child's exit handler ran", flush=True))
        sys.exit(3)
    print("child ended with", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
""")


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    base = tmp_path_factory.mktemp("warm")
    started = Launcher().start(base / "launcher.log", label=str(base))
    assert started.pid is not None, (base / "launcher.log").read_text()
    yield started
    started.close()
    assert started.pid is None


@pytest.fixture
def programs(tmp_path: Path) -> Path:
    for name, text in {"warm_program.py": PROGRAM, "warm_sleeper.py": SLEEPER, "warm_forker.py": FORKER}.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def spawn(launcher: Launcher, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[Forked, Path]:
    log = cwd / "out.log"
    with open(log, "ab") as handle:
        child = launcher.spawn(argv, env or dict(os.environ), str(cwd), handle.fileno(), 0o027)
    return child, log


def test_a_module_runs_as_a_fresh_interpreter_would_run_it(launcher: Launcher, programs: Path) -> None:
    env = dict(os.environ, WARM_TEST="only-this-child")
    child, log = spawn(launcher, [sys.executable, "-m", "warm_program", "7", "two words"], programs, env)
    assert child.wait(30) == 7
    lines = log.read_text().splitlines()
    assert lines == [
        "argv ['7', 'two words']", f"cwd {programs}", f"path0 {programs}",
        "env only-this-child False", "umask 0o27", "stdin ''", "main __main__", "exit handler ran",
    ]
    assert psutil.Process(launcher.pid).ppid() == os.getpid()


def test_the_environment_is_the_childs_own_not_the_launchers(launcher: Launcher, programs: Path) -> None:
    os.environ["PARENT_ONLY"] = "set after the launcher started"
    try:
        env = {k: v for k, v in os.environ.items() if k != "PARENT_ONLY"}
        child, log = spawn(launcher, [sys.executable, "-m", "warm_program", "0"], programs, env)
        assert child.wait(30) == 0
    finally:
        del os.environ["PARENT_ONLY"]
    assert "env None False" in log.read_text().splitlines()


def test_gunicorns_script_runs_warm(launcher: Launcher, tmp_path: Path) -> None:
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    assert warm_program([gunicorn, "--version"]) == ("script", gunicorn)
    child, log = spawn(launcher, [gunicorn, "--version"], tmp_path)
    assert child.wait(30) == 0
    assert "gunicorn" in log.read_text()


def test_a_signal_ends_it_and_the_status_says_which(launcher: Launcher, programs: Path) -> None:
    child, _ = spawn(launcher, [sys.executable, "-m", "warm_sleeper"], programs)
    procs.wait_until(lambda: psutil.Process(child.pid).cmdline()[:1] == [f"{sys.executable} -m warm_sleeper"],
                     10, "the child's title")
    assert os.getpgid(child.pid) == child.pid  # its own session and group, as start_new_session gives
    assert child.poll() is None
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == -signal.SIGTERM
    child.kill()  # ended: nothing is signalled (its PID may be someone else's now)


def test_a_process_the_program_forks_runs_its_exit_handlers(launcher: Launcher, programs: Path) -> None:
    child, log = spawn(launcher, [sys.executable, "-m", "warm_forker"], programs)
    assert child.wait(30) == 0
    assert log.read_text().splitlines() == ["child's exit handler ran", "child ended with 3"]


def test_only_this_interpreter_and_its_settings_start_warm(programs: Path) -> None:
    base = {"PATH": "/usr/bin", "PYTHONPATH": "/a"}
    assert warm_program([sys.executable, "-m", "strangler.stack.follow"]) == ("module", "strangler.stack.follow")
    assert warm_program([sys.executable, "-u", "-m", "x"]) is None  # flags: a fresh interpreter
    assert warm_program(["/usr/bin/python3", "-m", "x"]) is None  # another interpreter
    assert warm_program([str(programs / "warm_program.py")]) is None  # not beside this interpreter
    assert warm_program([str(Path(sys.executable).parent / "no-such-script")]) is None
    assert env_allows({"PATH": "/bin", "PYTHONPATH": "/a", "X": "1"}, base)
    assert not env_allows({"PATH": "/usr/bin", "PYTHONPATH": "/b"}, base)
    assert not env_allows({"PATH": "/usr/bin"}, base)  # PYTHONPATH dropped
    assert not env_allows({"PATH": "/usr/bin", "PYTHONPATH": "/a", "LD_PRELOAD": "x.so"}, base)
    assert not env_allows({"PATH": "/usr/bin", "PYTHONPATH": "/a", SWITCH: "0"}, base)


def test_a_proc_starts_cold_when_asked_or_when_the_launcher_has_gone(programs: Path) -> None:
    launcher = Launcher().start(programs / "launcher.log")
    argv = [sys.executable, "-m", "warm_sleeper"]
    asked = procs.Proc("cold", argv, programs / "cold.log", env={SWITCH: "0"}, cwd=str(programs), launcher=launcher)
    warm = procs.Proc("warm", argv, programs / "warm.log", cwd=str(programs), launcher=launcher)
    try:
        asked.start()
        warm.start()
        assert isinstance(asked.popen, subprocess.Popen) and isinstance(warm.popen, Forked)
        os.kill(launcher.pid, signal.SIGKILL)
        procs.wait_until(lambda: launcher.pid is None, 10, "the launcher's end")
        # the warm child outlives its launcher; once it ends, it reads as ended
        assert warm.alive()
        warm.popen.send_signal(signal.SIGTERM)
        procs.wait_until(lambda: not warm.alive(), 10, "the orphaned child's end")
        cold = procs.Proc("after", argv, programs / "after.log", cwd=str(programs), launcher=launcher).start()
        assert isinstance(cold.popen, subprocess.Popen) and cold.alive()
        assert cold.stop() == "terminated"
    finally:
        for proc in (asked, warm):
            proc.stop()
        launcher.close()


def test_a_large_environment_arrives_whole_with_its_log(launcher: Launcher, programs: Path) -> None:
    # the kernel splits a request this big across reads: its log fd arrives with the first part
    (programs / "warm_env.py").write_text("import os\nprint(len(os.environ['BIG']))\n")
    child, log = spawn(launcher, [sys.executable, "-m", "warm_env"], programs, dict(os.environ, BIG="x" * 100_000))
    assert child.wait(30) == 0
    assert log.read_text() == "100000\n"
    again, log = spawn(launcher, [sys.executable, "-m", "warm_program", "0"], programs)  # still serving
    assert again.wait(30) == 0


def test_a_launcher_that_does_not_answer_is_killed_and_the_start_is_cold(
        programs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from strangler.stack import warm

    launcher = Launcher().start(programs / "launcher.log")
    first, _ = spawn(launcher, [sys.executable, "-m", "warm_program", "0"], programs)  # it is serving
    assert first.wait(30) == 0
    stuck = launcher.pid
    os.kill(stuck, signal.SIGSTOP)
    monkeypatch.setattr(warm, "REPLY_TIMEOUT", 0.5)
    proc = procs.Proc("once", [sys.executable, "-m", "warm_sleeper"], programs / "once.log", cwd=str(programs),
                      launcher=launcher)
    try:
        proc.start()
        assert isinstance(proc.popen, subprocess.Popen) and proc.alive()
        assert procs._proc_starttime(stuck) is None  # killed: it can never fork this request later
        assert [p.pid for p in psutil.process_iter(["cmdline"]) if "warm_sleeper" in " ".join(p.info["cmdline"] or [])] == [proc.pid]
    finally:
        proc.stop()
        launcher.close()
