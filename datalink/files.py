"""Private files and directories: what the toolkit and the apps write is for their owner only.

The run dir, the data dir, SQLite files (password hashes), logs, pid files,
``state.json``, ``shadow.sqlite`` and sync watermarks are created 0700
(directories) and 0600 (files), whatever the caller's umask. A file or
directory that already exists keeps its mode: an operator who loosened it
on purpose is not overruled.

The apps use this module too (the monolith's data dir and SQLite file), so
it imports nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

DIR_MODE = 0o700
FILE_MODE = 0o600
# given to every process the toolkit starts, so what they create is private too
UMASK = 0o077


def private_dir(path: Path | str) -> Path:
    """Create directory *path* and every missing parent with mode 0700; return it.

    Parents that already exist are left as they are.
    """
    path = Path(path)
    missing = []
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue  # another process made it first
        os.chmod(directory, DIR_MODE)  # mkdir's mode is narrowed by the umask, never widened
    return path


def private_file(path: Path | str) -> Path:
    """Create the empty file *path* (and its directory) with mode 0600 unless it exists; return it.

    An existing file is never opened: closing any descriptor of a file drops
    the POSIX locks this process holds on it, and SQLite's locks are those.
    """
    path = Path(path)
    if path.exists():
        return path
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass  # made by another process or thread meanwhile: theirs stands
    return path


def open_private_append(path: Path | str) -> IO[bytes]:
    """Open *path* for appending bytes, creating it (and its directory) with mode 0600."""
    path = Path(path)
    private_dir(path.parent)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE), "ab")


def write_private(path: Path | str, text: str) -> Path:
    """Replace *path* with *text* atomically (a crash leaves the old or the new file), mode 0600."""
    path = Path(path)
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


def sqlite_file(url: object) -> Path | None:
    """The file a ``sqlite:///...`` SQLAlchemy URL (str or URL) names, None for others and memory."""
    text = str(url)
    if not text.startswith("sqlite"):
        return None
    _, _, rest = text.partition(":///")
    database = rest.split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    return Path(database)


def private_sqlite_file(url: object) -> None:
    """Create the SQLite file of *url* with mode 0600 before SQLite does (it would use 0644).

    SQLite gives its journal and WAL files the database file's mode, so they
    stay private too. Other databases are left alone.
    """
    path = sqlite_file(url)
    if path is not None:
        private_file(path)


def load_or_create_secrets(path: Path | str, names: Sequence[str]) -> dict[str, str]:
    """The secrets *names* stored at *path* (JSON, mode 0600), generated on first use.

    Created with ``O_EXCL``, so two processes starting together agree on one
    set. A file that lacks one of *names* (another version wrote it) raises
    ValueError saying to delete it.
    """
    path = Path(path)
    fresh = {name: secrets.token_hex(32) for name in names}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return _read_secrets(path, names)
    with os.fdopen(fd, "w") as handle:
        json.dump(fresh, handle)
    return fresh


def _read_secrets(path: Path, names: Sequence[str]) -> dict[str, str]:
    for _attempt in range(50):
        try:
            stored = json.loads(path.read_text() or "null")
        except json.JSONDecodeError:
            stored = None  # the other process is still writing it
        if isinstance(stored, dict) and all(isinstance(stored.get(n), str) for n in names):
            return {name: stored[name] for name in names}
        time.sleep(0.02)
    raise ValueError(f"{path} does not hold {' and '.join(names)}; delete it to generate new ones")
