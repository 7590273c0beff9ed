"""Write-through: after an app commits rows of a linked table, upsert them into every peer database.

Polling sync (``strangler.migrate.sync``) lags by its interval, but the
contract reads right after it writes (register on the users service, log in
on the monolith a few milliseconds later). So while ownership of a table is
split, the apps write through: the rows a commit changed are upserted into
each *peer* (the monolith into the service databases, a service into the
monolith's) before the response goes out. The follower stays as the safety
net for anything missed here (a peer that was down, a failed write).

The upsert rule is sync's (``_apply``): insert a row the peer lacks (id
kept); update one whose content differs unless the peer's copy is newer
(``updated_at`` greater); leave an equal row alone. A row with the same id
but another identity (a different ``created_at``, or ``user_id`` for a
message) is a *conflict*: two inserters allocated the same id. It is never
overwritten, only logged loudly and counted. (A user's nickname is not part
of its identity: ``PUT /api/users/<id>`` may change it.) After explicit ids
go into PostgreSQL, the table's sequence is moved past them so the peer's
own next insert does not collide; MariaDB and SQLite move on by themselves.

Nothing here ever fails the user's request: a peer that is down, slow or
refuses a row is logged and counted in :attr:`WriteThrough.stats`, and is
left alone for ``cooldown`` seconds so requests don't each wait for it.

Configuration, set by ``strangler up``: ``STRANGLER_WRITE_THROUGH`` = JSON
``{"<table>": ["<peer database URL>", ...], ...}``; unset or empty, off.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, SQLAlchemyError

from strangler.migrate.sync import _apply, reset_sequence
from strangler.migrate.tables import MigrateError, TableInfo, display_url, first_line, reflect

ENV_VAR = "STRANGLER_WRITE_THROUGH"
# besides created_at, the columns a row never changes once it exists
IDENTITY = {"messages": ("created_at", "user_id")}
DEFAULT_IDENTITY = ("created_at",)
STAT_NAMES = ("inserted", "updated", "kept_newer", "conflicts", "failed", "skipped")

logger = logging.getLogger(__name__)


class PeerDown(MigrateError):
    """A peer database cannot be reached (or isn't there): left alone for a moment."""


def parse_peers(raw: Any) -> dict[str, tuple[str, ...]]:
    """PURE: ``{"table": ["url", ...]}`` from JSON text (or a mapping); ValueError naming the fix."""
    example = '{"users": ["sqlite:////path/users.sqlite"]}'
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValueError(f"{ENV_VAR} must be JSON like {example}, not {raw[:80]!r}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{ENV_VAR} must be a JSON object like {example}")
    peers: dict[str, tuple[str, ...]] = {}
    for table, urls in raw.items():
        if isinstance(urls, str) or not isinstance(urls, Sequence) or not all(
            isinstance(u, str) and u.strip() for u in urls
        ):
            raise ValueError(f"{ENV_VAR}: {table!r} must map to a list of database URLs")
        for url in urls:
            try:
                make_url(url)
            except ArgumentError:
                raise ValueError(f"{ENV_VAR}: {url[:80]!r} ({table}) is not a database URL") from None
        peers[str(table)] = tuple(dict.fromkeys(u.strip() for u in urls))
    return peers


def identity_of(table: str) -> tuple[str, ...]:
    """PURE: the columns that tell two rows with the same id of *table* apart as different rows."""
    return IDENTITY.get(table, DEFAULT_IDENTITY)


def conflicts(info: TableInfo, rows: Sequence[Sequence[Any]], existing: Mapping[Any, Sequence[Any]],
              identity: Sequence[str]) -> list[tuple[Sequence[Any], Sequence[Any]]]:
    """PURE: ``(row, peer's row)`` pairs whose id exists in the peer with another identity."""
    id_index = info.columns.index(info.id_column)
    indexes = [info.columns.index(c) for c in identity if c in info.columns]
    found = []
    for row in rows:
        there = existing.get(row[id_index])
        if there is not None and any(row[i] != there[i] for i in indexes):
            found.append((row, there))
    return found


class WriteThrough:
    """Upserts committed rows of linked tables into their peers; share one per app, safe under threads.

    *peers*: table name → peer database URLs. Engines are created on first
    use and kept. *timeout* bounds each peer's connect, lock wait and
    statement; after a failure a peer is skipped for *cooldown* seconds.
    """

    def __init__(self, peers: Mapping[str, Sequence[str]], *, timeout: float = 3.0,
                 cooldown: float = 1.0) -> None:
        self.peers = {table: tuple(urls) for table, urls in parse_peers(peers).items() if urls}
        self.timeout, self.cooldown = timeout, cooldown
        self._lock = threading.Lock()
        # one write-through at a time, each re-reading what is committed now:
        # two commits of one row in the same second (a ping, then going
        # offline) could otherwise reach a peer in the wrong order, and equal
        # updated_at lets the older one win there
        self._serial = threading.Lock()
        self._engines: dict[str, Engine] = {}
        self._infos: dict[tuple[str, str], TableInfo] = {}
        self._down_until: dict[str, float] = {}
        self._stats: Counter[str] = Counter()
        self._hooks: list[tuple[Any, str, Any]] = []
        self.last_error: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, Any], **options: Any) -> WriteThrough | None:
        """The write-through ``env[STRANGLER_WRITE_THROUGH]`` asks for, or None when it is unset/empty."""
        raw = env.get(ENV_VAR)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        made = cls(parse_peers(raw), **options)
        return made if made.peers else None

    @property
    def stats(self) -> dict[str, int]:
        """Totals so far: rows inserted / updated / kept_newer / conflicts, and peer writes failed / skipped."""
        with self._lock:
            return {name: self._stats[name] for name in STAT_NAMES}

    # -- the session side -----------------------------------------------------

    def install(self, session_target: Any, tables: Mapping[str, Any], app: Any = None) -> None:
        """Write through the commits of *session_target* that change *tables* (name → Table or model).

        *session_target* is anything SQLAlchemy session events accept: a
        Session subclass, a sessionmaker or a scoped_session (Flask-SQLAlchemy's
        ``db.session``). With *app*, only commits made in that Flask app's
        context are written through (several apps may share one session
        class in a process, as tests do).
        """
        watched = {name: getattr(t, "__table__", t) for name, t in tables.items() if name in self.peers}
        if not watched:
            return
        key = f"strangler_write_through_{id(self)}"
        owner = weakref.ref(app) if app is not None else None

        def ours() -> bool:
            if owner is None:
                return True
            from flask import current_app, has_app_context

            return has_app_context() and current_app._get_current_object() is owner()

        def after_flush(session: Any, flush_context: Any) -> None:
            if not ours():
                return
            # new/dirty still show this flush's objects here; ids are assigned
            noted = session.info.setdefault(key + "_objects", [])
            for obj in [*session.new, *session.dirty]:
                name = inspect(obj).mapper.local_table.name
                if name in watched and (obj in session.new or session.is_modified(obj)):
                    noted.append(obj)

        def after_flush_postexec(session: Any, flush_context: Any) -> None:
            objects = session.info.pop(key + "_objects", None)
            if not objects:
                return
            pending = session.info.setdefault(key, {})
            for obj in objects:
                name, values = _column_values(obj)
                pending.setdefault(name, {})[values[_id_column(obj)]] = values

        def after_commit(session: Any) -> None:
            pending = session.info.pop(key, None)
            if pending:
                self.write_committed(session.get_bind(), watched, pending)

        def after_rollback(session: Any) -> None:
            session.info.pop(key, None)
            session.info.pop(key + "_objects", None)

        for name, fn in (("after_flush", after_flush), ("after_flush_postexec", after_flush_postexec),
                         ("after_commit", after_commit), ("after_rollback", after_rollback)):
            event.listen(session_target, name, fn)
            self._hooks.append((session_target, name, fn))

    def close(self) -> None:
        """Remove the session hooks and dispose the peer engines."""
        for target, name, fn in self._hooks:
            event.remove(target, name, fn)
        self._hooks.clear()
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
            self._infos.clear()
        for engine in engines:
            engine.dispose()

    # -- the peer side --------------------------------------------------------

    def write_committed(self, source: Engine, tables: Mapping[str, Any],
                        pending: Mapping[str, Mapping[Any, Mapping[str, Any]]]) -> None:
        """Write *pending*'s rows through as they are committed in *source* now, one call at a time.

        A row read back as gone (or a source that does not answer) falls back
        to the values seen at flush time.
        """
        with self._serial:
            current: dict[str, dict[Any, Mapping[str, Any]]] = {}
            for name, rows in pending.items():
                table = tables[name]
                id_column = next(iter(table.primary_key.columns))
                try:
                    with source.connect() as connection:
                        found = connection.execute(select(table).where(id_column.in_(list(rows))))
                        fresh = {row._mapping[id_column.name]: dict(row._mapping) for row in found}
                except SQLAlchemyError as exc:
                    logger.warning("write-through could not re-read %s (%s); using flush-time values",
                                   name, first_line(exc))
                    fresh = {}
                current[name] = {key: fresh.get(key, values) for key, values in rows.items()}
            self.write(current)

    def write(self, rows: Mapping[str, Mapping[Any, Mapping[str, Any]]]) -> None:
        """Upsert *rows* (table → id → ``{column: value}``, full rows) into each of the table's peers.

        Never raises for a peer's sake: failures are logged and counted.
        """
        by_peer: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
        for table, table_rows in rows.items():
            for url in self.peers.get(table, ()):
                by_peer.setdefault(url, {})[table] = list(table_rows.values())
        for url, tables in by_peer.items():
            self._write_peer(url, tables)

    def _write_peer(self, url: str, tables: Mapping[str, list[Mapping[str, Any]]]) -> None:
        if time.monotonic() < self._down_until.get(url, 0.0):
            self._count(skipped=1)
            return
        try:
            engine = self._engine(url)
            for table, rows in tables.items():
                self._upsert(engine, self._info(url, engine, table), rows)
        except (SQLAlchemyError, MigrateError, OSError) as exc:
            why = first_line(exc)
            if isinstance(exc, OperationalError | InterfaceError | PeerDown | OSError):
                # down or locked up: don't make every request wait for it
                self._down_until[url] = time.monotonic() + self.cooldown
            self.last_error = f"{display_url(url)}: {why}"
            self._count(failed=1)
            logger.warning("write-through to %s failed (the sync follower will catch up): %s",
                           display_url(url), why)
        except Exception as exc:  # a bug here must not turn a committed request into a 500
            self.last_error = f"{display_url(url)}: {type(exc).__name__}: {exc}"
            self._count(failed=1)
            logger.exception("write-through to %s failed unexpectedly", display_url(url))

    def _upsert(self, engine: Engine, info: TableInfo, values: list[Mapping[str, Any]]) -> None:
        missing = [c for c in info.columns if c not in values[0]]
        if missing:
            raise MigrateError(f"the peer's {info.name} has columns this app doesn't write "
                               f"({', '.join(missing)}); run strangler migrate upgrade")
        rows = [tuple(row[c] for c in info.columns) for row in values]
        id_index = info.columns.index(info.id_column)
        counts = {"read": 0, "inserted": 0, "updated": 0, "kept_newer": 0}
        with engine.connect() as connection:
            # read in the same transaction _apply writes in (BEGIN IMMEDIATE on SQLite)
            existing = {
                row[id_index]: row
                for row in connection.execute(select(*[info.col(c) for c in info.columns])
                                              .where(info.col(info.id_column).in_([r[id_index] for r in rows])))
            }
            clashes = conflicts(info, rows, existing, identity_of(info.name))
            for row, there in clashes:
                logger.error(
                    "write-through CONFLICT: %s id %s is a different row in %s (%s vs %s); "
                    "left alone: two backends inserted under the same id", info.name, row[id_index],
                    display_url(str(engine.url)), _identity(info, row), _identity(info, there))
            clashing = {id(row) for row, _there in clashes}
            rest = [row for row in rows if id(row) not in clashing]
            if rest:
                _apply(connection, info, info, rest, counts)
            else:
                connection.rollback()
        if counts["inserted"] and engine.dialect.name == "postgresql":
            reset_sequence(engine, info)
        self._count(inserted=counts["inserted"], updated=counts["updated"],
                    kept_newer=counts["kept_newer"], conflicts=len(clashes))

    def _count(self, **amounts: int) -> None:
        with self._lock:
            self._stats.update(amounts)

    def _engine(self, url: str) -> Engine:
        with self._lock:
            engine = self._engines.get(url)
            if engine is None:
                engine = self._engines[url] = peer_engine(url, self.timeout)
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:") \
                and not Path(database).exists():
            # SQLite would create an empty file: a peer that isn't there is a failure
            raise PeerDown(f"the peer database {database} does not exist")
        return engine

    def _info(self, url: str, engine: Engine, table: str) -> TableInfo:
        with self._lock:
            info = self._infos.get((url, table))
        if info is None:
            info = reflect(engine, table, f"peer {display_url(url)}")
            with self._lock:
                self._infos[(url, table)] = info
        return info


def peer_engine(url: str, timeout: float) -> Engine:
    """An engine on a peer database with every wait bounded by about *timeout* seconds.

    SQLite: the busy timeout, and ``BEGIN IMMEDIATE`` so the read-then-write
    of an upsert waits for the lock instead of failing on a stale snapshot.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    millis = int(timeout * 1000)
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"timeout": timeout})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None  # BEGIN is issued below
            dbapi_connection.execute(f"PRAGMA busy_timeout = {millis}")
            try:
                # as the apps do: in rollback-journal mode two writers escalating at
                # once deadlock and one fails at once; WAL has no such case
                dbapi_connection.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:  # another connection is converting it
                logger.debug("journal_mode = WAL on a peer: %s", exc)

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if backend == "postgresql":
        args: dict[str, Any] = {"connect_timeout": max(1, math.ceil(timeout)),
                                "options": f"-c statement_timeout={millis} -c lock_timeout={millis}"}
    elif backend in ("mysql", "mariadb"):
        seconds = max(1, math.ceil(timeout))
        args = {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
    else:
        args = {}
    return create_engine(url, connect_args=args, pool_pre_ping=True)


def _column_values(obj: Any) -> tuple[str, dict[str, Any]]:
    """The table name of a mapped *obj* and its column values keyed by column name (loads expired ones)."""
    mapper = inspect(obj).mapper
    values = {}
    for column in mapper.local_table.columns:
        values[column.name] = getattr(obj, mapper.get_property_by_column(column).key)
    return mapper.local_table.name, values


def _id_column(obj: Any) -> str:
    return next(iter(inspect(obj).mapper.local_table.primary_key.columns)).name


def _identity(info: TableInfo, row: Sequence[Any]) -> str:
    return ", ".join(f"{c}={row[info.columns.index(c)]!r}" for c in identity_of(info.name)
                     if c in info.columns)


def install_in_app(app: Any, session_target: Any, tables: Mapping[str, Any]) -> WriteThrough | None:
    """Turn write-through on in Flask *app* when ``STRANGLER_WRITE_THROUGH`` asks for it; return it.

    The setting is read from ``app.config`` (where a test's config mapping
    puts it) and else from the environment; unset or empty, nothing is
    installed and None is returned. The instance is kept in
    ``app.extensions["write_through"]``. A malformed value raises ValueError.
    """
    import os

    raw = app.config[ENV_VAR] if ENV_VAR in app.config else os.environ.get(ENV_VAR)
    write_through = WriteThrough.from_env({ENV_VAR: raw})
    if write_through is None:
        return None
    write_through.install(session_target, tables, app=app)
    app.extensions["write_through"] = write_through
    logger.info("write-through on: %s", {t: [display_url(u) for u in urls]
                                          for t, urls in write_through.peers.items()})
    return write_through
