"""Warm starts: one process that has imported the libraries every Python part needs, and forks them.

Each backend instance, sync follower, the promotion controller and the
console is a Python program whose start is mostly imports (Flask,
SQLAlchemy, Socket.IO, alembic): about half a CPU-second each, twelve of
them in one ``up``. A stack therefore starts one *launcher* process
(``python -m strangler.stack.warm``) that imports those libraries once,
then waits on a socket. For each process to start, the stack sends the
argv, environment, working directory and log file; the launcher forks,
and the child becomes that program exactly as a fresh interpreter would
(its own session, its umask, the log as stdout and stderr, its environment,
``sys.argv`` and ``sys.path[0]``, the program run as ``__main__``, a normal
interpreter exit). Only the libraries are shared: the project's own
modules (but the ``strangler`` package's top, which the launcher itself is
part of) and gunicorn and prometheus-client (whose defaults read the
environment at import) are imported afresh in each child.

A program is started warm only when a fresh interpreter would have run it
with this very interpreter and settings: ``[sys.executable, "-m", MODULE,
...]``, or a script in this interpreter's ``bin`` directory whose ``#!``
line names it (gunicorn's), and with no ``PYTHON*``, ``LD_*``, ``MALLOC*``,
``GLIBC_TUNABLES``, ``LC_*``, ``LANG*`` or ``OPENSSL*`` variable changed. Anything else, or ``STRANGLER_WARM_START=0`` in the process's
environment, or a launcher that has gone, starts cold with
:class:`subprocess.Popen`, as before.

The stack sees a warm child through :class:`Forked`, which answers like a
``Popen`` (``pid``, ``poll``, ``wait``, ``send_signal``, ``returncode``):
the launcher reaps its children and reports each exit status on the socket.
When the stack's process ends (``strangler down`` takes over) the launcher
reads end-of-file and exits; the children live on in their own sessions.

Nothing here imports the libraries itself: only the launcher's ``main`` does.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SWITCH = "STRANGLER_WARM_START"  # "0" (the stack's or one process's environment): always cold
CONTROL_FD = "STRANGLER_WARM_FD"  # the launcher's end of the socket (inherited fd number)
# What a Python part imports at start and that takes no setting from the environment at import
# time (a few read debug switches). gunicorn and prometheus_client do: they are left to each child.
PRELOAD = (
    "sqlalchemy", "sqlalchemy.orm", "sqlalchemy.dialects.sqlite", "sqlalchemy.ext.declarative",
    "flask", "flask_sqlalchemy", "flask_socketio", "socketio", "engineio", "simple_websocket",
    "redis", "requests", "jwt", "psutil", "click", "rich", "rich.console", "werkzeug", "jinja2",
    "alembic", "alembic.config", "alembic.command", "alembic.runtime.migration", "mako",
    "markdown_it", "bleach", "bs4", "limits", "flask_limiter", "websocket",
)
# read once as an interpreter starts (or by the C libraries it has loaded by then)
STARTUP_VARS = ("PYTHON", "LD_", "MALLOC", "GLIBC_TUNABLES", "LC_", "LANG", "OPENSSL")
REPLY_TIMEOUT = 30.0  # seconds to wait for the launcher's answer to one start (it may still be importing)


class LauncherGone(RuntimeError):
    """The launcher did not answer, or has ended (:meth:`Launcher.spawn` then says "start it cold")."""


def warm_program(argv: Sequence[str], executable: str = sys.executable) -> tuple[str, str] | None:
    """``("module", NAME)`` or ``("script", PATH)`` when a fresh ``executable`` would run ``argv``; else None.

    Not pure: a script's first line is read.
    """
    if len(argv) >= 3 and _same_interpreter(argv[0], executable) and argv[1] == "-m" \
            and not argv[2].startswith("-"):
        return "module", argv[2]
    if not argv or Path(argv[0]).parent != Path(executable).parent or _same_interpreter(argv[0], executable):
        return None
    try:
        with open(argv[0], "rb") as script:
            first = script.readline(512)
    except OSError:
        return None
    if first.startswith(b"#!") and _same_interpreter(os.fsdecode(first[2:].strip()), executable):
        return "script", argv[0]
    return None


def _same_interpreter(path: str, executable: str) -> bool:
    """True when ``path`` runs ``executable`` in the same environment: beside it (a venv's
    ``python`` and ``python3``), and the same file."""
    if path == executable:
        return True
    if Path(path).parent != Path(executable).parent or not Path(path).name.startswith("python"):
        return False
    try:
        return os.path.samefile(path, executable)
    except OSError:
        return False


def env_allows(env: Mapping[str, str], base: Mapping[str, str]) -> bool:
    """PURE: True when ``env`` (the child's whole environment) keeps what an interpreter reads at start.

    ``base`` is the environment the launcher started with.
    """
    if env.get(SWITCH, base.get(SWITCH, "1")) == "0":
        return False
    names = {name for name in (*env, *base) if name.startswith(STARTUP_VARS)}
    return all(env.get(name) == base.get(name) for name in names)


# ---- the stack's side -------------------------------------------------------------------


class Forked:
    """A warm child, as the stack sees it: the parts of ``subprocess.Popen`` the stack uses."""

    def __init__(self, launcher: Launcher, pid: int, args: Sequence[str]) -> None:
        self.launcher = launcher
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None
        self.started = _start_ticks(pid)  # with the PID, names this very process

    def poll(self) -> int | None:
        """The exit status once it has ended (negative: the signal that ended it), else None."""
        if self.returncode is None:
            self.returncode = self.launcher.exit_status(self.pid, self.started)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self.launcher.wait_event(0.05)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        """Signal it, unless it has already ended (its PID may belong to someone else by now)."""
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Launcher:
    """The stack's handle on its launcher process: :meth:`spawn` forks a program there."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._exits: dict[int, int] = {}
        self._replies: list[dict[str, Any]] = []
        self._base = dict(os.environ)
        self._serial = 0

    def start(self, log_path: Path, label: str = "") -> Launcher:
        """Start the launcher process, its own output to ``log_path``.

        ``label`` (the run dir) is only shown in its command line, so ``ps`` tells whose it is.

        It imports in the background; the first :meth:`spawn` waits for it.
        Nothing happens when ``STRANGLER_WARM_START=0`` (every start is cold).
        """
        if os.environ.get(SWITCH) == "0" or self._sock is not None:
            return self
        from datalink.files import open_private_append

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # SPT_NOENV: titles stay within the launcher's argv (its label makes room), environ untouched
        env = dict(self._base, **{CONTROL_FD: str(theirs.fileno()), "SPT_NOENV": "1"})
        try:
            with open_private_append(log_path) as log:
                self._proc = subprocess.Popen([sys.executable, "-m", "strangler.stack.warm", label], env=env,
                                              pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError:
            ours.close()
            return self
        finally:
            theirs.close()
        self._sock = ours
        return self

    @property
    def pid(self) -> int | None:
        """The launcher's PID while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None, log_fd: int,
              umask: int) -> Forked | None:
        """Fork ``argv`` (``env``: its whole environment) in the launcher, stdout and stderr on ``log_fd``.

        None when it cannot start warm here (not this interpreter's program, a
        setting an interpreter reads at start changed, or no launcher): the
        caller starts it cold. OSError when the launcher could not fork.
        """
        program = warm_program(argv)
        if program is None or not env_allows(env, self._base):
            return None
        kind, target = program
        with self._lock:
            if self._sock is None:
                return None
            self._serial += 1
            request = {"id": self._serial, "kind": kind, "target": target, "argv": list(argv),
                       "env": dict(env), "cwd": cwd or os.getcwd(), "umask": umask}
            try:
                socket.send_fds(self._sock, [json.dumps(request).encode() + b"\n"], [log_fd])
                reply = self._reply(self._serial)
            except (OSError, LauncherGone):
                # Never let a launcher that was only slow fork this program after we start it cold.
                self._kill()
                reply = self._late_reply(self._serial)
                if reply is None:
                    return None
        if "pid" not in reply:
            raise OSError(reply.get("error", "the launcher could not fork"))
        return Forked(self, int(reply["pid"]), argv)

    def exit_status(self, pid: int, started: int | None = None) -> int | None:
        """``pid``'s exit status if the launcher reported it (None: still running, as far as we know).

        ``started`` (its start time in clock ticks) tells it from a later process given the same PID
        once the launcher has gone and cannot report.
        """
        with self._lock:
            self._pump(0)
            if pid in self._exits:
                return self._exits[pid]
            if self._sock is None and (started is None or _start_ticks(pid) != started):
                return 1  # the launcher went before it could tell: ended, status unknown
            return None

    def wait_event(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for news from the launcher."""
        with self._lock:
            self._pump(timeout)
        if self._sock is None:
            time.sleep(timeout)

    def close(self) -> None:
        """Let the launcher go (it exits on end-of-file; what it started keeps running)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)

    def _late_reply(self, serial: int) -> dict[str, Any] | None:
        """What the (ended) launcher sent for ``serial`` before it went, if anything; closes the socket."""
        self._pump(0)
        reply = next((r for r in self._replies if r.get("id") == serial), None)
        if reply is not None:
            self._replies.remove(reply)
        self.close()
        return reply

    def _reply(self, serial: int) -> dict[str, Any]:
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            for reply in self._replies:
                if reply.get("id") == serial:
                    self._replies.remove(reply)
                    return reply
            left = deadline - time.monotonic()
            if left <= 0:
                raise LauncherGone(f"no answer within {REPLY_TIMEOUT:g}s")
            self._pump(left)
            if self._sock is None:
                raise LauncherGone("the launcher ended")

    def _pump(self, timeout: float) -> None:
        """Read what the launcher sent (waiting up to ``timeout`` for the first bytes)."""
        sock = self._sock
        if sock is None:
            return
        wait = timeout
        while select.select([sock], [], [], wait)[0]:
            wait = 0
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                sock.close()
                self._sock = None
                return
            lines, self._buffer = _lines(self._buffer + data)
            for line in lines:
                message = json.loads(line)
                if "exit" in message:
                    self._exits[int(message["exit"])] = int(message["code"])
                else:
                    if "pid" in message:  # a PID given again: an earlier child's end is not this one's
                        self._exits.pop(int(message["pid"]), None)
                    self._replies.append(message)


def _lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """PURE: the whole JSON lines in ``buffer`` (the socket's framing, both ways) and what follows the last."""
    *lines, rest = buffer.split(b"\n")
    return lines, rest


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, from /proc); None once it has ended (or is a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] == b"Z":
        return None
    return int(fields[19])


# ---- the launcher process ---------------------------------------------------------------


def main() -> None:
    """The launcher: preload, serve forks until end-of-file; in a forked child, become the program."""
    request, log_fd = _serve(socket.socket(fileno=int(os.environ.pop(CONTROL_FD))))
    _become(request, log_fd)


def _preload() -> None:
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 — a library a stack does not use is simply not preloaded
            continue


def _serve(control: socket.socket) -> tuple[dict[str, Any], int]:
    """Fork for each request; return only in a child (its request and log fd); exit at end-of-file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C at a foreground `up` is for the stack
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    _preload()
    buffer = b""
    pending: list[int] = []  # log fds received and not yet matched with their request's line
    while True:
        readable = select.select([control, wake_r], [], [])[0]
        if wake_r in readable:
            os.read(wake_r, 4096)
        _reap(control)
        if control not in readable:
            continue
        data, fds, _, _ = socket.recv_fds(control, 65536, 4)
        if not data:
            sys.exit(0)
        lines, buffer = _lines(buffer + data)
        pending += fds
        for line in lines:
            request = json.loads(line)
            if not pending:
                _send(control, {"id": request["id"], "error": "no log file came with the request"})
                continue
            log_fd = pending.pop(0)
            try:
                pid = os.fork()
            except OSError as exc:
                _send(control, {"id": request["id"], "error": f"cannot fork: {exc}"})
                os.close(log_fd)
                continue
            if pid == 0:
                signal.set_wakeup_fd(-1)
                for fd in (wake_r, wake_w):
                    os.close(fd)
                for fd in pending:
                    os.close(fd)
                control.close()
                return request, log_fd
            os.close(log_fd)
            _send(control, {"id": request["id"], "pid": pid})


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    try:
        control.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        sys.exit(0)  # the stack's process has gone: so do we


def _become(request: dict[str, Any], log_fd: int) -> None:
    """In the forked child: set up as ``subprocess.Popen`` would, then run the program as ``__main__``."""
    import runpy

    os.setsid()
    os.umask(int(request["umask"]))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    argv = request["argv"]
    _title(" ".join(argv))  # before the environment changes: setproctitle finds its room from it
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    program = os.getpid()
    try:
        if request["kind"] == "module":
            sys.argv = [argv[2], *argv[3:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(request["target"], run_name="__main__", alter_sys=True)
        else:
            sys.argv = [argv[0], *argv[1:]]
            sys.path[0] = os.path.dirname(os.path.realpath(argv[0]))
            runpy.run_path(request["target"], run_name="__main__")
    except SystemExit as exc:
        if os.getpid() == program:
            raise
        _end_fork(exc.code)  # a process the program forked (a gunicorn worker) is ending


def _end_fork(code: object) -> None:
    """End a process the program forked as an interpreter would, minus tearing down every module.

    Threads are joined, exit handlers run and stdout/stderr are flushed, as at
    any exit; only the teardown is skipped (it is pure CPU, and after a warm
    fork it also copies every shared page it touches). So objects' ``__del__``
    and files left open and unflushed are not finalized: a gunicorn worker's
    code must flush what it writes (logging's handlers are flushed by its
    own exit handler).
    """
    import atexit

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status & 0xFF)


def _title(title: str) -> None:
    """Show ``title`` in ps as this process's command line (when setproctitle is installed)."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)


if __name__ == "__main__":
    main()
