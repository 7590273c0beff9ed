"""Write-through: after an app commits rows of a linked table, upsert them into every peer database.

Polling sync (``strangler.migrate.sync``) lags by its interval, but the
contract reads right after it writes (register on the users service, log in
on the monolith a few milliseconds later). So while ownership of a table is
split, the apps write through: the rows a commit changed are upserted into
each *peer* (the monolith into the service databases, a service into the
monolith's) before the response goes out. The follower stays as the safety
net for anything missed here (a peer that was down, a failed write).

The upsert rule is sync's (``upsert_rows``): insert a row the peer lacks
(id kept); update one whose content differs unless the peer's copy is newer
(``updated_at`` greater); leave an equal row alone. A row with the same id
but another identity (``TableInfo.same_row``: the plan's ``identity``
columns, e.g. ``created_at`` and a message's ``user_id``) is a *collision*:
two inserters allocated the same id. It is never overwritten: the peer
keeps its row, the incoming one is moved aside into the peer's
``strangler_collisions`` (``datalink.collisions``), logged loudly
and counted. Id lanes (``datalink.ids``) keep that from happening
to new rows; the app installs its lane here too. After explicit ids go into
PostgreSQL, the sequence is moved past them, within its lane.

Nothing here ever fails the user's request: a peer that is down, slow or
refuses a row is logged and counted in :attr:`WriteThrough.stats`, and is
left alone for ``cooldown`` seconds so requests don't each wait for it.

Configuration, set by ``strangler up``: ``STRANGLER_WRITE_THROUGH`` = JSON
mapping each linked table to its peers' database URLs, either as a list or
as ``{"peers": [...], "identity": ["created_at", ...], "lane": [offset, stride]}``;
unset or empty, off.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, SQLAlchemyError

from datalink import collisions
from datalink.ids import Lane, install_lanes, parse_lane
from datalink.tables import (
    MigrateError,
    TableInfo,
    display_url,
    fillable,
    first_line,
    narrowed,
    reflect,
)
from datalink.upsert import reset_sequence, upsert_rows

ENV_VAR = "STRANGLER_WRITE_THROUGH"
DEFAULT_IDENTITY = ("created_at",)  # the plan's default ([tables.<name>] identity)
REPORT_VAR = "STRANGLER_WRITE_THROUGH_REPORT"  # a directory: one <pid>.json per process, for status
RESHAPE = 5.0  # seconds a peer table's reflected shape is trusted
STAT_NAMES = ("inserted", "updated", "kept_newer", "conflicts", "failed", "skipped")

logger = logging.getLogger(__name__)


class PeerDown(MigrateError):
    """A peer database cannot be reached (or isn't there): left alone for a moment."""


class LinkedTable(NamedTuple):
    """One linked table as an app sees it: its peers, its identity columns, its id lane."""

    peers: tuple[str, ...]
    identity: tuple[str, ...] = DEFAULT_IDENTITY
    lane: Lane | None = None


def parse_links(raw: Any) -> dict[str, LinkedTable]:
    """PURE: table -> LinkedTable from JSON text (or a mapping); ValueError naming the fix."""
    example = '{"users": ["sqlite:////path/users.sqlite"]}'
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValueError(f"{ENV_VAR} must be JSON like {example}, not {raw[:80]!r}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{ENV_VAR} must be a JSON object like {example}")
    return {str(table): _linked_table(str(table), entry) for table, entry in raw.items()}


def _linked_table(table: str, entry: Any) -> LinkedTable:
    if isinstance(entry, LinkedTable):
        return entry
    if not isinstance(entry, Mapping):
        return LinkedTable(_urls(table, entry))
    unknown = set(entry) - {"peers", "identity", "lane"}
    if unknown:
        raise ValueError(f"{ENV_VAR}: {table!r} has unknown keys {sorted(unknown)}; "
                         "expected peers, identity, lane")
    identity = entry.get("identity", DEFAULT_IDENTITY)
    if isinstance(identity, str) or not isinstance(identity, Sequence) or not identity \
            or not all(isinstance(c, str) and c for c in identity):
        raise ValueError(f"{ENV_VAR}: {table!r} identity must be a list of column names")
    lane = entry.get("lane")
    return LinkedTable(_urls(table, entry.get("peers", [])), tuple(identity),
                       parse_lane(lane, f"{ENV_VAR}: {table!r} lane") if lane is not None else None)


def _urls(table: str, urls: Any) -> tuple[str, ...]:
    if isinstance(urls, str) or not isinstance(urls, Sequence) or not all(
        isinstance(u, str) and u.strip() for u in urls
    ):
        raise ValueError(f"{ENV_VAR}: {table!r} must map to a list of database URLs")
    for url in urls:
        try:
            make_url(url)
        except ArgumentError:
            raise ValueError(f"{ENV_VAR}: {url[:80]!r} ({table}) is not a database URL") from None
    return tuple(dict.fromkeys(u.strip() for u in urls))


def parse_peers(raw: Any) -> dict[str, tuple[str, ...]]:
    """PURE: table -> peer database URLs (see :func:`parse_links`)."""
    return {table: link.peers for table, link in parse_links(raw).items()}


class WriteThrough:
    """Upserts committed rows of linked tables into their peers; share one per app, safe under threads.

    *peers*: table name → peer database URLs. Engines are created on first
    use and kept. *timeout* bounds each peer's connect, lock wait and
    statement; after a failure a peer is skipped for *cooldown* seconds.
    """

    def __init__(self, peers: Mapping[str, Any], *, timeout: float = 3.0,
                 cooldown: float = 1.0) -> None:
        links = parse_links(peers)
        self.links = {table: link for table, link in links.items() if link.peers}
        self.peers = {table: link.peers for table, link in self.links.items()}
        # a lane holds whether or not the table has peers right now: it is about inserts
        self.lanes = {table: link.lane for table, link in links.items() if link.lane}
        self.timeout, self.cooldown = timeout, cooldown
        self._lock = threading.Lock()
        # one write-through at a time, each re-reading what is committed now:
        # two commits of one row in the same second (a ping, then going
        # offline) could otherwise reach a peer in the wrong order, and equal
        # updated_at lets the older one win there
        self._serial = threading.Lock()
        self._engines: dict[str, Engine] = {}
        self._infos: dict[tuple[str, str], tuple[TableInfo, float]] = {}
        self._down_until: dict[str, float] = {}
        self._stats: Counter[str] = Counter()
        self._hooks: list[tuple[Any, str, Any]] = []
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.notes: list[str] = []  # columns only one side has, as met
        report = os.environ.get(REPORT_VAR)
        self.report_path = Path(report) / f"{os.getpid()}.json" if report else None
        self._reported_at, self._reported_failed = 0.0, 0

    @classmethod
    def from_env(cls, env: Mapping[str, Any], **options: Any) -> WriteThrough | None:
        """The write-through ``env[STRANGLER_WRITE_THROUGH]`` asks for, or None when it is unset/empty."""
        raw = env.get(ENV_VAR)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        made = cls(parse_links(raw), **options)
        return made if made.peers or made.lanes else None

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
        ours = _app_check(app)

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
            # first in line: the rows reach the peers before the app's own after-commit
            # hooks push updated_model, so a client told of a change reads it on any backend
            event.listen(session_target, name, fn, insert=True)
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
                self._upsert(engine, self._info(url, engine, table, rows[0].keys()), rows)
        except (SQLAlchemyError, MigrateError, OSError) as exc:
            why = first_line(exc)
            if isinstance(exc, OperationalError | InterfaceError | PeerDown | OSError):
                # down or locked up: don't make every request wait for it
                self._down_until[url] = time.monotonic() + self.cooldown
            self._failed(url, why)
            logger.warning("write-through to %s failed (the sync follower will catch up): %s",
                           display_url(url), why)
        except Exception as exc:  # a bug here must not turn a committed request into a 500
            self._failed(url, f"{type(exc).__name__}: {exc}")
            logger.exception("write-through to %s failed unexpectedly", display_url(url))
        finally:
            self._report()

    def _failed(self, url: str, why: str) -> None:
        self.last_error, self.last_error_at = f"{display_url(url)}: {why}", time.time()
        self._count(failed=1)
        with self._lock:  # the peer's tables may have changed shape: read them again next time
            for key in [k for k in self._infos if k[0] == url]:
                del self._infos[key]

    def _note_shape(self, engine: Engine, info: TableInfo, written: Any) -> None:
        """Log, once per peer and column, a column only one side has (it is not carried)."""
        where = display_url(str(engine.url))
        found = [f"{info.name}.{c} is only in the peer {where}: left to its default"
                 for c in info.columns if c not in written]
        found += [f"{info.name}.{c} is not in the peer {where}: not carried" for c in written
                  if c not in info.columns]
        for note in found:
            if note not in self.notes:
                self.notes.append(note)
                logger.warning("write-through: %s", note)

    def _report(self) -> None:
        """Write the figures to the report file (``STRANGLER_WRITE_THROUGH_REPORT``), at most once a second."""
        if self.report_path is None or time.monotonic() - self._reported_at < 1.0 \
                and self.stats["failed"] == self._reported_failed:
            return
        stats = self.stats
        data = {"pid": os.getpid(), "at": time.time(), "stats": stats, "last_error": self.last_error,
                "last_error_at": self.last_error_at, "notes": self.notes}
        try:
            self.report_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.report_path.with_name(f".{self.report_path.name}.tmp")
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, self.report_path)
        except OSError as exc:  # figures are for status; never fail a request over them
            logger.debug("write-through report %s: %s", self.report_path, exc)
        self._reported_at, self._reported_failed = time.monotonic(), stats["failed"]

    def _upsert(self, engine: Engine, info: TableInfo, values: list[Mapping[str, Any]]) -> None:
        written = values[0].keys()
        blocking = [c for c in info.columns if c not in written and not fillable(info.col(c))]
        if blocking:
            raise MigrateError(
                f"the peer's {info.name}.{blocking[0]} is NOT NULL without a default and this app "
                f"doesn't write it: give it a default there, or add it to this app's schema with a "
                f"revision in migrations/ (then strangler migrate upgrade)")
        self._note_shape(engine, info, written)
        # the columns both sides have; the peer's own extra ones keep their values (or default)
        info = narrowed(info, [c for c in info.columns if c in written])
        rows = [tuple(row[c] for c in info.columns) for row in values]
        counts = {"read": 0, "inserted": 0, "updated": 0, "kept_newer": 0}
        with engine.connect() as connection:
            # read in the same transaction the upsert writes in (BEGIN IMMEDIATE on SQLite)
            _applied, clashes = upsert_rows(connection, info, info, rows, counts)
        for row, there in clashes:
            logger.error("write-through CONFLICT: %s %s is a different row in %s (%s there); that "
                         "one is kept, this one moved aside into %s: two backends inserted under "
                         "the same id", info.name, info.describe(row), display_url(str(engine.url)),
                         info.describe(there), collisions.TABLE_NAME)
        if clashes:
            collisions.record(engine, info, clashes, came_from="write-through")
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

    def _info(self, url: str, engine: Engine, table: str, written: Any = None) -> TableInfo:
        """The peer's table as reflected at most RESHAPE seconds ago (a schema may change while linked)."""
        with self._lock:
            info, at = self._infos.get((url, table), (None, 0.0))
        if info is None or time.monotonic() - at > RESHAPE or (
                written is not None and not set(written) <= set(info.columns) and time.monotonic() - at > 1.0):
            # also at once (at most every second) when this app writes a column the peer's
            # cached shape lacks: the peer may have just gained it, and leaving it out would
            # stamp the peer's row as new as ours without its value
            link = self.links.get(table)
            info = reflect(engine, table, f"peer {display_url(url)}",
                           link.identity if link else DEFAULT_IDENTITY)
            with self._lock:
                self._infos[(url, table)] = (info, time.monotonic())
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


def _app_check(app: Any) -> Callable[[], bool]:
    """A test for "this commit is made in *app*'s context" (always true without an app)."""
    if app is None:
        return lambda: True
    owner = weakref.ref(app)

    def ours() -> bool:
        from flask import current_app, has_app_context

        return has_app_context() and current_app._get_current_object() is owner()

    return ours


def install_in_app(app: Any, session_target: Any, tables: Mapping[str, Any]) -> WriteThrough | None:
    """Turn write-through on in Flask *app* when ``STRANGLER_WRITE_THROUGH`` asks for it; return it.

    The setting is read from ``app.config`` (where a test's config mapping
    puts it) and else from the environment; unset or empty, nothing is
    installed and None is returned. The instance is kept in
    ``app.extensions["write_through"]``. A malformed value raises ValueError.
    """

    raw = app.config[ENV_VAR] if ENV_VAR in app.config else os.environ.get(ENV_VAR)
    write_through = WriteThrough.from_env({ENV_VAR: raw})
    if write_through is None:
        return None
    write_through.install(session_target, tables, app=app)
    if write_through.lanes:
        with app.app_context():
            engine = app.extensions["sqlalchemy"].engine
        install_lanes(engine, session_target, write_through.lanes, only=_app_check(app))
    app.extensions["write_through"] = write_through
    logger.info("write-through on: %s", {t: [display_url(u) for u in urls]
                                          for t, urls in write_through.peers.items()})
    return write_through
