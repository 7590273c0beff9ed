"""Throw-away databases on each engine the toolkit supports: SQLite, PostgreSQL, MariaDB.

The servers are the machine's (PostgreSQL on 127.0.0.1:5432, MariaDB on
127.0.0.1:3306); each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
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


