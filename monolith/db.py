"""The monolith's database: the SQLAlchemy extension and its schema.

The schema is applied with alembic from code (no alembic.ini needed).

``create_app`` migrates an empty database on start. Two processes starting
together on one database take turns through :func:`migration_lock` (an
advisory lock in a PostgreSQL or MariaDB database, a ``fcntl`` lock beside
a SQLite file); the second one then finds the schema at head and does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, g, has_app_context, request
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as _FlaskSession
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from datalink.files import private_sqlite_file
from datalink.locks import default_lock_path, migration_lock  # noqa: F401 (re-exported)

VERSION_TABLE = "alembic_version"

logger = logging.getLogger(__name__)


class MonolithSession(_FlaskSession):
    """The monolith's own session class, so its events never touch other apps' sessions."""


db = SQLAlchemy(session_options={"class_": MonolithSession})


def upgrade_database(
    url: str, lock_path: str | Path | None = None, name: str = "monolith"
) -> None:
    """Upgrade the database at *url* to the newest schema of environment *name*."""
    # alembic costs every process that imports the app ~0.2 s of CPU; only migrating needs it
    from alembic import command

    from migrations import alembic_config

    private_sqlite_file(url)
    with migration_lock(url, lock_path, name):
        command.upgrade(alembic_config(url, name), "head")


def has_schema(url: str) -> bool:
    """Tell whether the database at *url* has alembic's version table."""
    private_sqlite_file(url)  # connecting creates a missing SQLite file; make it 0600 first
    engine = create_engine(url, poolclass=NullPool)
    try:
        return inspect(engine).has_table(VERSION_TABLE)
    finally:
        engine.dispose()


def ensure_schema(
    url: str, lock_path: str | Path | None = None, name: str = "monolith"
) -> bool:
    """Migrate the database at *url* (environment *name*) if it is empty; return whether it did."""
    if has_schema(url):
        return False
    upgrade_database(url, lock_path, name)
    return True


def configure_engine(engine: Engine) -> None:
    """Make SQLite behave under concurrent threads; other engines are left alone.

    SQLite transactions start with ``BEGIN IMMEDIATE``: a deferred transaction
    that reads and then writes can fail at once with "database is locked" when
    another writer got in between, while an immediate one waits its turn (up
    to the busy timeout). WAL lets readers of other processes carry on. Reads
    (see :func:`defer_reads`) start deferred instead: an immediate transaction
    takes the one write lock, so every GET would queue behind every other
    request, writes and reads alike.
    """
    if engine.dialect.name != "sqlite" or getattr(engine, "_monolith_configured", False):
        return
    private_sqlite_file(engine.url)  # it holds password hashes: 0600, before SQLite makes it 0644
    engine._monolith_configured = True  # type: ignore[attr-defined]

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record):  # noqa: ANN001
        dbapi_connection.isolation_level = None  # let the begin hook issue BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        # WAL is a property of the file: set once, it stays. Switching needs a
        # moment alone with the file, which another process's writer can deny
        # ("database is locked") — then a later connection switches it.
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                logger.info("SQLite journal stays as it is for now (%s)", exc)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # noqa: ANN001
        reading = has_app_context() and g.get(_READING, False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


# flask.g flag: this request only reads, so its SQLite transactions start deferred.
_READING = "db_reading"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def defer_reads(app: Flask) -> None:
    """Let *app*'s GET, HEAD and OPTIONS requests read in deferred SQLite transactions.

    In WAL mode a deferred transaction that only reads never waits for a
    writer. A read request that must also write (marking the user seen) does
    that in a transaction of its own, under :func:`writing`. Socket.IO events
    and everything outside a request keep ``BEGIN IMMEDIATE``. Other engines
    need none of this: nothing is installed for them.
    """
    with app.app_context():
        if app.extensions["sqlalchemy"].engine.dialect.name != "sqlite":
            return

    @app.before_request
    def _reads_defer() -> None:
        if request.method in READ_METHODS:
            g.setdefault(_READING, True)


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """End the session's (read) transaction; the ones begun inside start ``BEGIN IMMEDIATE``.

    A deferred transaction that has read cannot safely turn into a write on
    SQLite (it fails at once if another writer got in between), so a read
    request writes in a fresh, immediate one. The caller commits inside.
    Outside a deferred read (other engines, writes) it does nothing.
    """
    if not (has_app_context() and g.get(_READING, False)):
        yield
        return
    db.session.commit()  # nothing pending: this only ends the read transaction
    g.pop(_READING)
    try:
        yield
    finally:
        g.setdefault(_READING, True)
