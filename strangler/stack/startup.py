"""Bringing a stack's parts up together: each starts once what it needs is ready, one loop polls them all.

A :class:`Part` is one thing ``strangler up`` waits for: etcd, the data
links, Redis, Traefik, each backend instance, the console. It names the
parts it ``needs``; :func:`bring_up` starts every part whose needs are
ready (so independent parts start together) and then, round after round,
asks each started part's checks in order (health, then registered, then
routed) until all pass. One loop drives every part; within a round the
parts' probes run side by side (a busy backend's slow answer does not
hold up the others'), and what several parts ask alike (etcd's
registrations, Traefik's view) is read once per round (:class:`RoundCache`). A part's process that ends while starting fails
the whole start at once, in one line naming it and quoting its log's last
lines, unless the part is ``optional`` (then the line is reported and the
rest carries on: the supervisor restarts it).

Progress stays readable however the parts interleave: a part's ready line
(and any lines it reported meanwhile) is printed only once every part
listed before it is settled, so lines come in the order of ``parts``.

No Click and no knowledge of what the parts are: ``strangler.stack.lifecycle``
builds them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from strangler.stack.procs import Proc, StartupError

Echo = Callable[[str], None]
Check = tuple[str, Callable[[], bool]]  # (what it waits for, in a message; True once there)
TAIL = 3  # log lines quoted when a part's process ends while starting
PROBES = 16  # parts probed side by side within one round, at most


@dataclass
class Part:
    """One thing to start and wait for.

    ``start`` starts it without waiting and returns the processes it
    started (tracked by the caller inside ``start``, so a failure anywhere
    stops them too); ``checks`` are asked in order, each once the one
    before has passed; ``describe`` gives the end of its ready line (its
    URL). ``background`` is work with no process (the data links): it runs
    in a thread from the start, and the part is ready once it has returned
    (what it raises ends the start). ``lines`` collects what the part
    reports while starting; they are printed before its ready line
    (``quiet``: no ready line, for a step of another part's start).
    """

    name: str
    start: Callable[[], Sequence[Proc]] = lambda: ()
    checks: Sequence[Check] = ()
    background: Callable[[], Any] | None = None
    needs: Sequence[str] = ()
    optional: bool = False
    quiet: bool = False
    describe: Callable[[], str] = lambda: ""
    lines: list[str] = field(default_factory=list)
    procs: Sequence[Proc] = ()
    began: float | None = None
    stage: int = 0
    outcome: str = ""  # "" while pending; "ready" or "failed" once settled
    seconds: float = 0.0
    thread: threading.Thread | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def say(self, line: str) -> None:
        """Report ``line`` with this part's progress (thread-safe: list.append)."""
        self.lines.append(line)


def ended_line(name: str, proc: Proc) -> str:
    """One line for a process that ended while starting: its exit code, its log, its last lines."""
    code = proc.popen.returncode if proc.popen is not None else None
    tail = [line.strip() for line in proc.log_tail(TAIL).splitlines() if line.strip()]
    last = f"; last lines: {' | '.join(tail)}" if tail else ""
    return f"{name} exited with code {code} while starting; read {proc.log_path}{last}"


def bring_up(
    parts: Sequence[Part],
    *,
    timeout: float,
    echo: Echo = lambda line: None,
    ready: Sequence[str] = (),
    each_round: Callable[[], Any] = lambda: None,
    interval: float = 0.05,
) -> dict[str, float]:
    """Start ``parts`` as their needs allow and wait for all; return seconds to ready by name.

    ``ready`` names parts settled earlier (needs may name them).
    ``each_round`` runs before every polling round (e.g. to forget cached
    snapshots). Raises StartupError (one line) when a part that is not
    optional ends or is not ready within ``timeout`` seconds of its start,
    and ValueError when a part needs one that is neither in ``parts`` nor
    ``ready`` (it could never start).
    """
    known = {part.name for part in parts} | set(ready)
    for part in parts:
        missing = [need for need in part.needs if need not in known]
        if missing:
            raise ValueError(f"{part.name} needs {', '.join(missing)}, which nothing starts")
    try:
        return _loop(parts, timeout, echo, set(ready), each_round, interval)
    except BaseException:
        # work still running in a thread (a schema upgrade) finishes before the caller stops everything
        for part in parts:
            if part.thread is not None:
                part.thread.join(timeout)
        raise


def _loop(parts: Sequence[Part], timeout: float, echo: Echo, done: set[str],
          each_round: Callable[[], Any], interval: float) -> dict[str, float]:
    with ThreadPoolExecutor(max_workers=min(PROBES, len(parts)) or 1, thread_name_prefix="probe") as probes:
        return _rounds(parts, timeout, echo, done, each_round, interval, probes)


def _rounds(parts: Sequence[Part], timeout: float, echo: Echo, done: set[str],
            each_round: Callable[[], Any], interval: float, probes: ThreadPoolExecutor) -> dict[str, float]:
    printed = 0
    while True:
        each_round()
        for part in parts:
            if part.began is None and all(need in done for need in part.needs):
                _start(part)
        if not any(part.began is not None and not part.outcome for part in parts):
            waiting = [part.name for part in parts if part.began is None]
            if waiting:  # a cycle of needs (a bug in the caller): nothing could ever start them
                raise StartupError(f"{', '.join(waiting)} cannot start: what they need never becomes ready")
        polled = [(part, probes.submit(_poll, part, timeout)) for part in parts
                  if part.began is not None and not part.outcome]
        for _, future in polled:
            future.result()  # the first failure, in the parts' order
        done.update(part.name for part, _ in polled if part.outcome)
        while printed < len(parts) and parts[printed].outcome:
            _print(parts[printed], echo)
            printed += 1
        if printed == len(parts):
            return {part.name: part.seconds for part in parts}
        time.sleep(interval)


def _start(part: Part) -> None:
    part.began = time.monotonic()
    if part.background is not None:
        work = part.background
        part.thread = threading.Thread(target=_run, args=(work, part.result), daemon=True)
        part.thread.start()
        part.checks = [(f"{part.name} (in the background)", lambda: _finished(part)), *part.checks]
    part.procs = list(part.start())


def _poll(part: Part, timeout: float) -> None:
    """Ask ``part``'s checks from where it stands; settle it when all pass or its process ended."""
    while part.stage < len(part.checks):
        what, check = part.checks[part.stage]
        if not check():
            break
        part.stage += 1
    if part.stage == len(part.checks):
        part.outcome, part.seconds = "ready", time.monotonic() - (part.began or 0)
        return
    for proc in part.procs:
        if not proc.alive():
            line = ended_line(part.name, proc)
            if not part.optional:
                raise StartupError(line)
            part.say(f"{line}; the supervisor retries it")
            part.outcome = "failed"
            return
    waited = time.monotonic() - (part.began or 0)
    if waited > timeout:
        what = part.checks[part.stage][0]
        logs = "; ".join(f"read {proc.log_path}" for proc in part.procs)
        raise StartupError(f"{what} did not come up within {timeout:g}s{'; ' + logs if logs else ''}")


def _print(part: Part, echo: Echo) -> None:
    for line in part.lines:
        echo(line)
    if part.outcome == "ready" and not part.quiet:
        echo(f"{part.name} ready ({part.seconds:.1f}s) {part.describe()}".rstrip())


def _finished(part: Part) -> bool:
    """True once ``part``'s background work has returned; raises what it raised."""
    if part.thread is None or part.thread.is_alive():
        return False
    if "error" in part.result:
        raise part.result["error"]
    return True


def _run(work: Callable[[], Any], result: dict[str, Any]) -> None:
    try:
        result["value"] = work()
    except BaseException as exc:  # noqa: BLE001 — handed to the polling loop, which raises it
        result["error"] = exc


class RoundCache:
    """What one polling round read, shared by the parts' probes (thread-safe); ``clear`` between rounds."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, fetch: Callable[[], Any]) -> Any:
        """The value read this round under ``key``, fetched (once, under the lock) if not read yet."""
        with self._lock:
            if key not in self._values:
                self._values[key] = fetch()
            return self._values[key]

    def clear(self) -> None:
        """Forget everything: the next round reads afresh."""
        with self._lock:
            self._values.clear()
