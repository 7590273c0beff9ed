"""``strangler logs``: the stack's log files merged into one stream, a prefix per process.

Each process of a stack writes ``<run_dir>/logs/<name>.log`` (``etcd``,
``traefik``, ``monolith.0``, ``sync-users``, ``console``, ...). Their lines
carry timestamps in several shapes (ISO, gunicorn's, Redis's, Go's,
the followers' ``HH:MM:SS``); :func:`timestamp` reads them, a line without
one (a traceback's) takes its predecessor's, and :func:`merge` orders all
lines by time. Traefik's access log (one JSON line per request) is left
out unless named.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ACCESS_LOG = "traefik-access"
MAX_LINE = 4000  # characters of a line shown; longer ones are cut

_ISO = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(\.\d+)?\s?(Z|[+-]\d\d:?\d\d)?")
_GO = re.compile(r"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)")
_REDIS = re.compile(r"(\d\d?) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d\d):(\d\d):(\d\d)")
_CLOCK = re.compile(r"^(\d\d):(\d\d):(\d\d) ")
_SINCE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """``5m``, ``90s``, ``2h``, ``1d`` (or plain seconds) as seconds; ValueError saying the form."""
    found = _SINCE.match(text.strip())
    if not found or float(found[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration; write it like 30s, 5m, 2h or 1d")
    return float(found[1]) * _UNITS[found[2]]


def timestamp(line: str, today: datetime | None = None) -> float | None:
    """PURE: the Unix time a log line starts with (within its first 80 characters), None if none.

    Without a zone the time is the machine's local time (as the processes wrote it).
    """
    head = line[:80]
    found = _ISO.search(head)
    if found:
        zone = found[8]
        stamp = datetime(*map(int, found.groups()[:6]),
                         microsecond=int(float(found[7] or 0) * 1_000_000))
        if zone:
            zone = "+00:00" if zone == "Z" else zone
            sign = 1 if zone[0] == "+" else -1
            hours, minutes = int(zone[1:3]), int(zone[-2:])
            return stamp.replace(tzinfo=UTC).timestamp() - sign * (hours * 3600 + minutes * 60)
        return stamp.timestamp()
    found = _GO.search(head)
    if found:
        return datetime(*map(int, found.groups())).timestamp()
    found = _REDIS.search(head)
    if found:
        return datetime.strptime(" ".join(found.groups()[:3]) + f" {found[4]}:{found[5]}:{found[6]}",
                                 "%d %b %Y %H:%M:%S").timestamp()
    found = _CLOCK.match(line)
    if found:
        day = today or datetime.now()
        return day.replace(hour=int(found[1]), minute=int(found[2]), second=int(found[3]),
                           microsecond=0).timestamp()
    return None


@dataclass(frozen=True)
class Line:
    """One log line: when (inherited from the line before when it has no time), whose, what."""

    time: float
    process: str
    text: str


def log_files(run_dir: Path, backend: str | None = None) -> dict[str, Path]:
    """Process name -> log file: every process's, or those of ``backend`` (``users`` -> users.0, users.1).

    The access log only when asked for by name (``traefik-access``).
    """
    logs = Path(run_dir) / "logs"
    found = {path.name.removesuffix(".log"): path for path in sorted(logs.glob("*.log"))}
    if backend is None:
        return {name: path for name, path in found.items() if name != ACCESS_LOG}
    return {name: path for name, path in found.items()
            if name == backend or name.startswith(backend + ".")}


def read_lines(process: str, lines: Iterable[str], start: float = 0.0) -> list[Line]:
    """PURE: ``lines`` of one process with times (a line without one takes the previous line's)."""
    out, last = [], start
    for text in lines:
        stamp = timestamp(text)
        last = stamp if stamp is not None else last
        out.append(Line(last, process, text.rstrip("\n")[:MAX_LINE]))
    return out


def merge(files: dict[str, Path], since: float | None = None) -> list[Line]:
    """Every line of ``files`` in time order (per file order kept for equal times), newer than ``since``."""
    lines: list[Line] = []
    for process, path in files.items():
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                lines.extend(read_lines(process, handle))
        except OSError:
            continue
    lines.sort(key=lambda line: line.time)  # stable: a file's own order stays
    if since is not None:
        lines = [line for line in lines if line.time >= since]
    return lines


def follow(files: dict[str, Path], interval: float = 0.2) -> Iterator[Line]:
    """The lines added to ``files`` from now on, as they come (until the caller stops)."""
    offsets = {name: path.stat().st_size if path.exists() else 0 for name, path in files.items()}
    partial = dict.fromkeys(files, "")
    while True:
        quiet = True
        for name, path in files.items():
            try:
                size = path.stat().st_size
                if size < offsets[name]:
                    offsets[name] = 0  # truncated or replaced: from its start
                if size == offsets[name]:
                    continue
                with path.open("rb") as handle:
                    handle.seek(offsets[name])
                    chunk = handle.read(1 << 20)
            except OSError:
                continue
            offsets[name] += len(chunk)
            quiet = False
            text = partial[name] + chunk.decode("utf-8", "replace")
            *complete, partial[name] = text.split("\n")
            for line in complete:
                yield Line(time.time(), name, line[:MAX_LINE])
        if quiet:
            time.sleep(interval)
