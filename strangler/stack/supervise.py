"""The stack's supervisor: one process per local stack that keeps what ``up`` started running.

It watches every process the stack records (``Stack.procs``: etcd, Redis,
Traefik, the backend instances, the sync followers and whatever else ``up``
starts the same way) with no per-kind code. A process that ends while the
supervisor did not ask it to is started again with the same argv and
environment after a back-off that doubles with each fast failure (from
:data:`BACKOFF_FIRST`, capped at :data:`BACKOFF_CAP`); after
:data:`CRASHLOOP_AFTER` fast failures in a row it is marked ``crashlooping``
and left alone, its last log lines shown. It also carries the scale intents
``strangler scale`` writes into etcd (see :mod:`strangler.stack.scale`).

What it sees is written to ``<run_dir>/supervisor.json`` for ``strangler status``,
and served as Prometheus metrics (restarts, states, promotions) on a loopback
port recorded in ``state.json`` (:mod:`strangler.stack.metrics`).

Signals: SIGINT / SIGTERM stop the whole stack (draining the backends);
SIGUSR1 (sent by ``strangler down``) ends the supervisor alone, leaving the
processes to ``down``, which drains and stops them itself.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datalink.files import write_private
from strangler.stack import metrics, procs
from strangler.stack.rotate import rotate_logs
from strangler.stack.state import STATUS_FILE, SUPERVISOR

FAST = 10.0  # seconds: ending sooner than this after a start is a fast failure
CRASHLOOP_AFTER = 5  # fast failures in a row before giving up
BACKOFF_FIRST = 0.25  # seconds before the first restart
BACKOFF_CAP = 8.0
HEALTHY_AFTER = 1.0  # a process with no health check counts as healthy after running this long
STATES = ("starting", "healthy", "draining", "crashlooping")
ROTATE_EVERY = 5.0  # seconds between two looks at the logs' sizes
ACCESS_LOG = "traefik-access.log"  # Traefik reopens it on SIGUSR1; the other logs are copied, then cut
MB = 1024 * 1024

Echo = Callable[[str], None]


def backoff(failures: int) -> float:
    """PURE: seconds to wait before restarting after ``failures`` (>= 1) fast failures in a row.

    ``BACKOFF_FIRST`` doubled per failure, never more than ``BACKOFF_CAP``.
    """
    return min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** max(0, failures - 1))


@dataclass
class Watched:
    """One supervised process and what the supervisor knows of it."""

    proc: procs.Proc
    health: Callable[[], bool] | None = None
    backend: str | None = None
    release: str = ""
    service: str = ""  # a backend instance's Traefik service (a blue/green set's)
    state: str = "starting"
    restarts: int = 0
    last_exit: int | None = None
    fast_failures: int = 0
    started_at: float = field(default_factory=time.monotonic)
    retry_at: float | None = None
    last_lines: str = ""

    def to_json(self) -> dict[str, Any]:
        """What ``supervisor.json`` holds for it."""
        return {"name": self.proc.name, "pid": self.proc.pid, "backend": self.backend,
                "url": self.proc.url, "release": self.release, "service": self.service, "state": self.state,
                "restarts": self.restarts, "last_exit": self.last_exit,
                "log": str(self.proc.log_path), "last_lines": self.last_lines}


class Supervisor:
    """Restarts what dies, carries scale intents, and reports; drive it with :meth:`run`."""

    def __init__(self, stack: Any, echo: Echo = lambda line: None, interval: float = 0.2) -> None:
        self.stack = stack
        self.echo = echo
        self.interval = interval
        self.watched: dict[str, Watched] = {}
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self.outcome = ""  # "stop" (stop the stack) or "hand-over" (down takes over)
        self._written: dict[str, Any] | None = None
        self._rotated_at = time.monotonic()
        for proc in stack.procs.values():
            self.watch(proc, state="healthy" if proc.alive() else "starting")
        procs.write_self_pidfile(stack.run_dir, SUPERVISOR)
        self._write()

    def serve_metrics(self) -> str:
        """Serve the supervisor's own ``/metrics`` (strangler.stack.metrics) on a free loopback port,
        and record its URL in ``state.json`` (``supervisor_metrics``); the URL."""
        url = metrics.serve(self, STATES)
        self.stack.state[metrics.STATE_KEY] = url
        self.stack.write_state()
        return url

    def watch(self, proc: procs.Proc, state: str = "starting") -> Watched:
        """Supervise ``proc`` from now on (generic: its health check comes from the stack)."""
        launch = self.stack.launches.get(proc.name)
        watched = Watched(proc, health=self.stack.health_check(proc.name),
                          backend=launch.backend if launch else None,
                          release=launch.env.get("STRANGLER_RELEASE", "") if launch else "",
                          service=launch.traefik_service if launch else "", state=state)
        with self.lock:
            self.watched[proc.name] = watched
        return watched

    # ---- the loop -----------------------------------------------------------------------

    def run(self) -> str:
        """Supervise until a signal says otherwise; return "stop" or "hand-over"."""
        def stop(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.outcome = self.outcome or "stop"
            self._stop.set()

        def hand_over(signum: int, frame: Any) -> None:
            self.outcome = self.outcome or "hand-over"
            self._stop.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGUSR1, hand_over)
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 — one bad pass must never end supervision
                self.echo(f"supervisor: pass failed: {type(exc).__name__}: {exc}")
            if self.outcome == "" and not any(w.proc.alive() or w.state not in ("crashlooping",)
                                              for w in self.watched.values()):
                self.outcome = "ended"
                break
        if self.outcome == "hand-over":
            procs.remove_pidfile(self.stack.run_dir, SUPERVISOR)
        return self.outcome

    def tick(self, now: float | None = None) -> None:
        """One pass: notice ends, restart when their back-off ran out, judge health, carry intents."""
        now = time.monotonic() if now is None else now
        with self.lock:
            watched = list(self.watched.values())
        for w in watched:
            if w.state in ("crashlooping", "draining"):
                continue
            if w.retry_at is not None:
                if now >= w.retry_at:
                    self._restart(w, now)
                continue
            if not w.proc.alive():
                self._ended(w, now)
            elif w.state == "starting" and self._healthy(w, now):
                w.state = "healthy"
                self.echo(f"{w.proc.name} healthy (pid {w.proc.pid})")
        hook = getattr(self.stack, "reconcile", None)
        if hook is not None:
            hook(self)
        if now - self._rotated_at >= ROTATE_EVERY:
            self._rotated_at = now
            self.rotate_logs()
        self._write()

    def rotate_logs(self) -> None:
        """Rotate the stack's logs over the plan's ``[stack] log_max_mb`` (keeping ``log_keep`` copies)."""
        settings = self.stack.plan.stack
        traefik = self.watched.get("traefik")
        reopen = {}
        if traefik is not None and traefik.proc.alive():
            reopen[ACCESS_LOG] = lambda: os.kill(traefik.proc.pid, signal.SIGUSR1)
        for path in rotate_logs(self.stack.run_dir / "logs", max_bytes=settings.log_max_mb * MB,
                                keep=settings.log_keep, reopen=reopen):
            self.echo(f"rotated {path.name} (over {settings.log_max_mb} MB; {settings.log_keep} copies kept)")

    def _healthy(self, w: Watched, now: float) -> bool:
        if w.health is None:
            return now - w.started_at >= HEALTHY_AFTER
        try:
            return w.health()
        except Exception:  # noqa: BLE001 — a failing check means "not yet"
            return False

    def _ended(self, w: Watched, now: float) -> None:
        code = w.proc.popen.returncode if w.proc.popen else None
        w.last_exit = code
        hook = getattr(self.stack, "ended", None)
        if hook is not None:
            hook(w.proc.name)
        fast = w.state == "starting" or now - w.started_at < FAST
        w.fast_failures = w.fast_failures + 1 if fast else 1
        if w.fast_failures >= CRASHLOOP_AFTER:
            w.state = "crashlooping"
            w.last_lines = w.proc.log_tail(5)
            self.echo(f"{w.proc.name} is crashlooping: it ended {w.fast_failures} times in a row within "
                      f"{FAST:g}s of starting (last exit code {code}); not restarting it; "
                      f"last lines of {w.proc.log_path}:\n{w.last_lines}")
            return
        delay = backoff(w.fast_failures)
        w.state = "starting"
        w.retry_at = now + delay
        self.echo(f"{w.proc.name} (pid {w.proc.pid}) exited with code {code}; read {w.proc.log_path}; "
                  f"restarting it in {delay:g}s")

    def _restart(self, w: Watched, now: float) -> None:
        w.retry_at = None
        old = w.proc.pid
        procs.kill_group_leftovers(old, w.proc.started)
        try:
            w.proc.start()
        except procs.StartupError as exc:
            w.last_exit = None
            w.fast_failures += 1
            w.state = "crashlooping" if w.fast_failures >= CRASHLOOP_AFTER else "starting"
            w.retry_at = None if w.state == "crashlooping" else now + backoff(w.fast_failures)
            w.last_lines = str(exc)
            self.echo(str(exc))
            return
        w.restarts += 1
        w.started_at = now
        procs.write_pidfile(self.stack.run_dir, w.proc.name, w.proc)
        self.echo(f"{w.proc.name} restarted (pid {w.proc.pid}, restart {w.restarts})")

    def _write(self) -> None:
        """Write ``supervisor.json`` when what it says changed (not five times a second regardless)."""
        with self.lock:
            processes = {name: w.to_json() for name, w in self.watched.items()}
        if processes == self._written:
            return
        data = {"pid": os.getpid(), "updated": time.time(), "processes": processes}
        write_private(self.stack.run_dir / STATUS_FILE, json.dumps(data, indent=1))
        self._written = processes

    def forget(self, name: str) -> None:
        """Stop supervising ``name`` (it was drained on purpose)."""
        with self.lock:
            self.watched.pop(name, None)


# ---- the detached supervisor: `strangler up --detach` runs this module ------------------

SPEC_ENV = "STRANGLER_SUPERVISE"
READY = "\x00ready"
FAILED = "\x00failed "


def main() -> int:
    """Start the stack described by ``STRANGLER_SUPERVISE`` and supervise it until told to stop.

    Progress goes to stdout (the ``up --detach`` that started us relays it)
    until READY, then to ``logs/supervisor.log``.
    """
    from strangler.plan import PlanError, load_plan
    from strangler.stack.lifecycle import Stack, StackError

    spec = json.loads(os.environ.pop(SPEC_ENV))

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        plan = load_plan(Path(spec["plan"]))
    except PlanError as exc:
        say(FAILED + str(exc))
        return 1
    stack = Stack(plan, spec.get("run_dir"), spec.get("ports") or {}, echo=say)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        stack.up()
    except StackError as exc:
        say(FAILED + str(exc))
        return 1
    except KeyboardInterrupt:
        say(FAILED + "interrupted; stopped everything it had started")
        return 1
    supervisor = Supervisor(stack, echo=_log_line)
    supervisor.serve_metrics()
    say(READY)
    _to_log(stack.run_dir / "logs" / "supervisor.log")
    outcome = supervisor.run()
    if outcome in ("stop", "ended"):
        for name, pid, how in stack.stop():
            _log_line(f"stopped {name} (pid {pid}): {how}")
        procs.remove_pidfile(stack.run_dir, SUPERVISOR)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _log_line(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def _to_log(path: Path) -> None:
    """From now on stdout and stderr go to ``path``: whoever read our pipe has gone."""
    from datalink.files import open_private_append

    handle = open_private_append(path)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(handle.fileno(), 1)
    os.dup2(handle.fileno(), 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)


if __name__ == "__main__":
    sys.exit(main())
