"""Throw-away databases on each engine the toolkit supports: SQLite, PostgreSQL, MariaDB.

The servers are the machine's (PostgreSQL on 127.0.0.1:5432, MariaDB on
127.0.0.1:3306); each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

SERVERS = {
    "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}
ENGINES = ("sqlite", "postgresql", "mariadb")


@contextlib.contextmanager
def database(kind: str, tmp_path: Path, name: str) -> Iterator[str]:
    """A fresh, empty database on engine *kind*; yields its URL and drops it afterwards.

    On a server engine that is not running, the test is skipped, unless CI
    is set, where it fails.
    """
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'{name}.sqlite'}"
        return
    base = SERVERS[kind]
    db_name = f"strangler_{name}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {db_name}"))
    except OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"{kind} at {base} is required in CI: {exc.orig}")
        pytest.skip(f"no {kind} server at {base} (set CI=1 to make this a failure)")
    try:
        yield base.rsplit("/", 1)[0] + f"/{db_name}"
    finally:
        with admin.connect() as connection:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            connection.execute(text(f"DROP DATABASE IF EXISTS {db_name}{force}"))
        admin.dispose()




@contextlib.contextmanager
def sqlite_write_lock_held(path: Path | str, for_at_most: float = 20) -> Iterator[threading.Event]:
    """Hold SQLite's write lock on the file at *path* (``BEGIN IMMEDIATE`` from another connection).

    Yields an event set when the lock is let go: after *for_at_most* seconds at
    the latest, or on leaving the block. A read that finishes while the event
    is still unset did not wait behind the writer.
    """
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release_later() -> None:
        released.wait(for_at_most)
        released.set()
        writer.execute("ROLLBACK")
        writer.close()

    threading.Thread(target=release_later, daemon=True).start()
    try:
        yield released
    finally:
        released.set()
