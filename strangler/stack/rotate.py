"""Size-based rotation of the stack's logs, so a stack can run for months.

A log over ``max_bytes`` becomes ``<log>.1`` (older copies shift to ``.2`` …
``.<keep>``; the oldest is dropped) and its writer goes on in an empty file.

Two ways to hand the writer an empty file:

- **rename, then reopen** — for a writer that reopens its file on a signal
  (Traefik does on ``SIGUSR1``). Nothing is lost: lines written between the
  rename and the reopen land in ``.1``.
- **copy, then truncate** — for everything else (a gunicorn or etcd whose
  stdout is the log, opened with ``O_APPEND`` by :mod:`strangler.stack.procs`,
  so after the truncation the writer appends at the new end instead of
  leaving a hole). Lines written in the instant between the copy and the
  truncation are lost; the copy is re-read up to the truncation to keep that
  window to microseconds.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from datalink.files import FILE_MODE

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_KEEP = 3


def rotate_logs(
    log_dir: Path | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    keep: int = DEFAULT_KEEP,
    reopen: Mapping[str, Callable[[], None]] | None = None,
) -> list[Path]:
    """Rotate every ``*.log`` in *log_dir* larger than *max_bytes*; return the ones rotated.

    *reopen* maps a log's file name to a call that makes its writer reopen it
    (rename-then-reopen); other logs are copied then truncated.
    """
    reopen = reopen or {}
    rotated = []
    for path in sorted(Path(log_dir).glob("*.log")):
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        if size > max_bytes:
            rotate(path, keep=keep, reopen=reopen.get(path.name))
            rotated.append(path)
    return rotated


def rotate(path: Path, *, keep: int = DEFAULT_KEEP, reopen: Callable[[], None] | None = None) -> None:
    """Rotate *path* now: shift ``.1`` … ``.<keep>``, then hand the writer an empty file."""
    if keep < 1:
        raise ValueError(f"keep is {keep}; keep at least 1 rotated file")
    _shift(path, keep)
    first = _numbered(path, 1)
    if reopen is not None:
        path.rename(first)
        reopen()
    else:
        _copy_truncate(path, first)


def rotated_files(path: Path) -> list[Path]:
    """The rotated copies of *path* that exist, newest first."""
    found = []
    n = 1
    while _numbered(path, n).exists():
        found.append(_numbered(path, n))
        n += 1
    return found


def _numbered(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def _shift(path: Path, keep: int) -> None:
    _numbered(path, keep).unlink(missing_ok=True)
    for n in range(keep - 1, 0, -1):
        if _numbered(path, n).exists():
            _numbered(path, n).rename(_numbered(path, n + 1))


def _copy_truncate(path: Path, target: Path) -> None:
    """Copy *path* to *target*, cut *path* to nothing; *target* appears only once it is whole
    (the copy is written under a ``.part`` name, then renamed), so no reader sees half of it."""
    part = target.with_name(target.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with open(path, "r+b") as source, os.fdopen(fd, "wb") as copy:
        shutil.copyfileobj(source, copy)
        # what the writer appended while the bulk was copied, then the cut
        shutil.copyfileobj(source, copy)
        source.truncate(0)
    part.rename(target)
