"""The lock a migration of one database holds, whichever process, container or machine runs it.

On a database server (PostgreSQL, MariaDB or MySQL) the lock lives in the
database itself: an advisory lock named after the database and the alembic
environment, held on a connection of its own for as long as the migration
runs. Two containers sharing nothing but the database still take turns,
which a lock file in each container's ``/tmp`` never made them do; a
process that dies releases it with its connection. SQLite files keep their
``fcntl`` lock beside the file (``monolith.db``): whoever opens the file can
see the lock. :func:`migration_lock` picks the right one for a URL: the
monolith, ``strangler migrate`` and a scaffolded service's start all take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from datalink.files import private_file

DEFAULT_TIMEOUT = 600.0  # seconds a migration waits for another one before giving up
_MYSQL_NAME_MAX = 64  # GET_LOCK's longest name


class LockTimeout(RuntimeError):
    """Another migration held the database's lock longer than we would wait (one line)."""


def has_advisory_lock(url: str) -> bool:
    """True for the engines whose migrations lock in the database: PostgreSQL, MariaDB, MySQL."""
    return make_url(url).get_backend_name() in ("postgresql", "mysql", "mariadb")


def lock_name(url: str, env: str) -> str:
    """PURE: the advisory lock's name for environment *env* of the database at *url*."""
    name = f"strangler-migrate:{make_url(url).database}:{env}"
    if len(name) > _MYSQL_NAME_MAX:  # MariaDB refuses longer names
        name = "strangler-migrate:" + hashlib.sha256(name.encode()).hexdigest()[:40]
    return name


def postgres_key(name: str) -> int:
    """PURE: *name* as the signed 64-bit key ``pg_advisory_lock`` takes."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def advisory_lock(url: str, env: str, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Hold the database's migration lock for *env* for the length of the ``with`` block.

    Waits up to *timeout* seconds for another holder, then raises
    LockTimeout. Only for :func:`has_advisory_lock` engines.
    """
    name = lock_name(url, env)
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                key = postgres_key(name)
                connection.execute(text(f"SET lock_timeout = {int(timeout * 1000)}"))
                try:
                    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                except DBAPIError as exc:
                    raise LockTimeout(_waited(name, timeout)) from exc
                release = text("SELECT pg_advisory_unlock(:key)"), {"key": key}
            else:
                got = connection.execute(text("SELECT GET_LOCK(:name, :timeout)"),
                                         {"name": name, "timeout": timeout}).scalar()
                if got != 1:
                    raise LockTimeout(_waited(name, timeout))
                release = text("SELECT RELEASE_LOCK(:name)"), {"name": name}
            try:
                yield
            finally:
                connection.execute(*release)
    finally:
        engine.dispose()


def _waited(name: str, timeout: float) -> str:
    return (f"another migration held the database lock {name!r} for over {timeout:g} s; "
            "let it finish, or find the process holding it")


def migration_lock(url: str, lock_path: str | Path | None = None,
                   name: str = "monolith") -> contextlib.AbstractContextManager:
    """The lock migrations of *url* (environment *name*) take turns on, across processes and hosts.

    A server database locks in itself (:func:`advisory_lock`: every container
    that reaches it sees the lock); a SQLite file beside itself; anything else
    in *lock_path* (default: one file per URL in the temporary directory).
    """
    if has_advisory_lock(url):
        return advisory_lock(url, name)
    return _file_lock(_lock_for(url, lock_path))


def default_lock_path(url: str) -> Path:
    """Return the lock file guarding migrations of *url*.

    A SQLite database is locked next to its file, so any two processes using
    that file agree on the lock whatever their data dirs.
    """
    if _sqlite_file(url):
        path = Path(make_url(url).database).resolve()
        return path.with_name(path.name + ".migrate.lock")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"strangler-migrate-{digest}.lock"


def _lock_for(url: str, lock_path: str | Path | None) -> Path:
    # a SQLite file is always locked beside itself: two processes given other
    # data dirs (and so other lock paths) still share that file
    if lock_path is None or _sqlite_file(url):
        return default_lock_path(url)
    return Path(lock_path)


def _sqlite_file(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(private_file(path), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
