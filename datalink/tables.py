"""What copy, sync and verify share: opening databases, reflecting tables, reading rows.

Everything here works the same on SQLite, PostgreSQL and MariaDB. Rows are
read by keyset pagination on the integer primary key (``WHERE id > :last
ORDER BY id LIMIT n``), so memory stays bounded whatever the table's size,
and compared in a *canonical* form (booleans as 0/1, floats by ``repr``) so
the same row reads the same on every engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, NoSuchTableError, OperationalError

from datalink.files import private_file

CHUNK = 5000
TIME_COLUMN = "updated_at"
BIRTH_COLUMN = "created_at"  # never changes once a row exists: two values mean two rows


class MigrateError(Exception):
    """A migrate command cannot go on: one line saying what to fix. Nothing was changed."""


def display_url(url: str) -> str:
    """Return *url* with any password masked, fit for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show none of it rather than a secret
        return "<unparsable database URL>"


def first_line(exc: BaseException) -> str:
    """The first non-empty line of a driver error, without SQLAlchemy's background links."""
    raw = getattr(exc, "orig", None) or exc
    for line in str(raw).splitlines():
        if line.strip():
            return line.strip()
    return type(raw).__name__


def open_engine(url: str, label: str, must_exist: bool = True) -> Engine:
    """Open and test the database *label* at *url*; raise MigrateError in one line if unusable.

    A SQLite file that does not exist is refused when *must_exist* (SQLite
    would otherwise create an empty one); the caller disposes the engine.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if must_exist and not path.exists():
            raise MigrateError(
                f"the {label} database {path} does not exist; "
                f"run strangler migrate upgrade --db {label}"
            )
        private_file(path)  # an absent target is created 0600: it will hold password hashes
    engine = create_engine(url, pool_pre_ping=False)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_waits)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (OperationalError, DBAPIError) as exc:
        engine.dispose()
        raise MigrateError(
            f"cannot reach the {label} database at {display_url(url)}: {first_line(exc)}"
        ) from None
    return engine


def _sqlite_waits(dbapi_connection: Any, record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # the apps write the same file meanwhile: wait for their locks, don't fail
    cursor.execute("PRAGMA busy_timeout = 30000")
    # WAL as the apps use it; with it, synchronous=NORMAL skips an fsync per
    # commit yet never corrupts: a power cut may lose the last chunks, which
    # the next copy (from the target's max id) simply copies again
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    # bulk inserts touch index pages all over (user_id): keep them in memory
    cursor.execute("PRAGMA cache_size = -65536")
    cursor.close()


@contextlib.contextmanager
def engines(*pairs: tuple[str, str]) -> Iterator[list[Engine]]:
    """Open one engine per ``(url, label)`` (all must exist); dispose them all afterwards."""
    opened: list[Engine] = []
    try:
        for url, label in pairs:
            opened.append(open_engine(url, label))
        yield opened
    finally:
        for engine in opened:
            engine.dispose()


@dataclass(frozen=True)
class TableInfo:
    """A reflected table: its columns in order, its integer id column and whether it has updated_at."""

    table: Table
    columns: tuple[str, ...]
    id_column: str
    bool_columns: frozenset[str]
    # the columns a row never changes once it exists (see same_row)
    identity: tuple[str, ...] = (BIRTH_COLUMN,)

    @property
    def name(self) -> str:
        """The table's name."""
        return self.table.name

    @property
    def has_time(self) -> bool:
        """Whether the table has the ``updated_at`` column sync keys on."""
        return TIME_COLUMN in self.columns

    def same_row(self, one: Sequence[Any], other: Sequence[Any]) -> bool:
        """Whether two rows with the same id are the same row: equal :attr:`identity` columns.

        The one definition that write-through, the followers, copy and
        verify share. Different values mean each side created its own row
        under that id (an id collision), which none of them may paper over.
        Identity columns the table lacks are left out.
        """
        return all(one[i] == other[i] for i in self.identity_indexes)

    @property
    def identity_indexes(self) -> tuple[int, ...]:
        """Where the :attr:`identity` columns the table has sit in a row."""
        return tuple(self.columns.index(c) for c in self.identity if c in self.columns)

    def describe(self, row: Sequence[Any]) -> str:
        """A row's id and identity, for messages: ``id 7 (created_at=1767225600, user_id=3)``."""
        parts = ", ".join(f"{self.columns[i]}={row[i]!r}" for i in self.identity_indexes)
        return f"id {row[self.columns.index(self.id_column)]} ({parts})"

    def col(self, name: str) -> Column:
        """The SQLAlchemy column called *name*."""
        return self.table.c[name]


def column_names(engine: Engine, name: str) -> tuple[str, ...]:
    """The column names of table *name* as the database has them now (one cheap query)."""
    quote = engine.dialect.identifier_preparer.quote
    with engine.connect() as connection:
        result = connection.exec_driver_sql(f"SELECT * FROM {quote(name)} WHERE 1 = 0")
        names = tuple(result.keys())
        result.close()
        connection.rollback()
    return names


def reflect(engine: Engine, name: str, label: str,
            identity: Sequence[str] | None = None) -> TableInfo:
    """Reflect table *name* of database *label*; MigrateError if absent or without an integer id.

    *identity*: the plan's identity columns for the table (default ``created_at``).
    """
    try:
        table = Table(name, MetaData(), autoload_with=engine)
    except NoSuchTableError:
        raise MigrateError(
            f"the {label} database has no table {name!r}; run strangler migrate upgrade --db {label}"
        ) from None
    pk = list(table.primary_key.columns)
    if len(pk) != 1 or kind(pk[0].type) != "int":
        raise MigrateError(
            f"table {name!r} in the {label} database needs a single integer primary key to be copied"
        )
    bools = frozenset(c.name for c in table.columns if isinstance(c.type, Boolean))
    return TableInfo(table, tuple(c.name for c in table.columns), pk[0].name, bools,
                     tuple(identity) if identity else (BIRTH_COLUMN,))


def kind(sql_type: Any) -> str:
    """The family of a column type that copying cares about: int, float, str, bytes or other.

    Booleans count as int: MariaDB stores them as TINYINT(1), and the
    canonical form of a boolean is 0/1 anyway.
    """
    if isinstance(sql_type, Boolean | Integer):
        return "int"
    if isinstance(sql_type, Float | Numeric):
        return "float"
    if isinstance(sql_type, String):
        return "str"
    if isinstance(sql_type, LargeBinary):
        return "bytes"
    return "other"


@dataclass(frozen=True)
class Pairing:
    """How one table lines up in two databases: what is carried, what is left, what blocks.

    ``source`` and ``target`` are the two TableInfos narrowed to the shared
    columns (in the source's order): copy, sync, write-through and verify
    work on those. ``notes`` are warnings to show (a column only one side
    has); ``problems`` make the pair unusable, each with what to do.
    """

    source: TableInfo
    target: TableInfo
    only_source: tuple[str, ...]
    only_target: tuple[str, ...]
    problems: tuple[str, ...]
    labels: tuple[str, str] = ("source", "target")

    @property
    def notes(self) -> list[str]:
        """One line per column only one side has (nothing blocks on them)."""
        name, (src, dst) = self.source.name, self.labels
        return ([f"{name}.{c} is only in the {src} database: not carried to the {dst}"
                 for c in self.only_source]
                + [f"{name}.{c} is only in the {dst} database: rows from the {src} get its default"
                   for c in self.only_target])


def fillable(column: Column) -> bool:
    """Whether a row written without *column* still fits: it is nullable or has a server default."""
    return column.nullable or column.server_default is not None


def narrowed(info: TableInfo, columns: Sequence[str]) -> TableInfo:
    """*info* seen through *columns* only (a subset of its own, kept in the given order)."""
    return dataclasses.replace(info, columns=tuple(columns),
                               bool_columns=info.bool_columns & frozenset(columns))


def pair(source: TableInfo, target: TableInfo, labels: tuple[str, str] = ("source", "target"),
         needs_time: bool = False) -> Pairing:
    """Line up one table of two databases on the columns both have (see :class:`Pairing`).

    A column only one side has is fine while the other side needs no value
    for it: nullable, or with a server default. A NOT NULL column without
    default that the other side lacks blocks: its rows could not be written.
    Shared columns must agree in kind, length and NULLs as before.
    """
    shared = [c for c in source.columns if c in target.columns]
    only_source = tuple(c for c in source.columns if c not in target.columns)
    only_target = tuple(c for c in target.columns if c not in source.columns)
    problems = []
    if source.id_column != target.id_column:
        problems.append(f"{source.name}: the id column {source.id_column!r} is not in both databases")
    if needs_time and TIME_COLUMN not in shared:
        problems.append(f"{source.name}: {TIME_COLUMN} is not in both databases; sync needs it")
    for name in only_target:
        if not fillable(target.col(name)):
            problems.append(
                f"{source.name}.{name} is NOT NULL without a default in the {labels[1]} database "
                f"and the {labels[0]} has no such column: give it a default there, or add it to the "
                f"{labels[0]}'s schema with a revision in migrations/ (then strangler migrate upgrade)")
    problems.extend(_shared_problems(source, target, shared))
    return Pairing(narrowed(source, shared), narrowed(target, shared), only_source, only_target,
                   tuple(problems), labels)


def _shared_problems(source: TableInfo, target: TableInfo, shared: Sequence[str]) -> list[str]:
    problems = []
    for name in shared:
        s, t = source.col(name), target.col(name)
        if kind(s.type) != kind(t.type):
            problems.append(f"{source.name}.{name}: {s.type} vs {t.type}")
        elif kind(s.type) == "str" and (t.type.length or 10**9) < (s.type.length or 10**9):
            problems.append(f"{source.name}.{name}: {s.type} does not fit in {t.type}")
        # SQLite reports an INTEGER PRIMARY KEY (the rowid) nullable, yet it never holds NULL
        elif s.nullable and not t.nullable and name != source.id_column:
            problems.append(f"{source.name}.{name}: nullable in the source, NOT NULL in the target")
    return problems


def schema_problems(source: TableInfo, target: TableInfo) -> list[str]:
    """What makes *target* unable to hold *source*'s rows (see :func:`pair`)."""
    return list(pair(source, target).problems)


def canonical(value: Any) -> Any:
    """One value in the form every engine agrees on (bool → 0/1, float → repr, bytes → hex)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Decimal):
        return repr(float(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def canonical_row(row: Sequence[Any]) -> tuple:
    """A row's values in canonical form (see :func:`canonical`)."""
    return tuple(canonical(v) for v in row)


def to_target(info: TableInfo, target: TableInfo, row: Sequence[Any]) -> dict[str, Any]:
    """A source row as the target's bind values (0/1 become booleans where the target has them)."""
    values = dict(zip(info.columns, row, strict=True))
    for name in target.bool_columns:
        if values.get(name) is not None:
            values[name] = bool(values[name])
    return values


def iter_rows(
    connection: Connection, info: TableInfo, after: int | None = None,
    upto: int | None = None, chunk: int = CHUNK,
) -> Iterator[tuple]:
    """Yield the rows with *after* < id <= *upto*, ordered by id, read *chunk* at a time."""
    for rows in iter_chunks(connection, info, after, upto, chunk):
        yield from rows


def iter_chunks(
    connection: Connection, info: TableInfo, after: int | None = None,
    upto: int | None = None, chunk: int = CHUNK,
) -> Iterator[list]:
    """Yield lists of up to *chunk* rows with *after* < id <= *upto*, in id order (keyset pagination).

    Rows are plain tuples straight from the driver (no per-row SQLAlchemy
    processing: this is the copy's hot loop); compare them through
    :func:`canonical_row`. The SQL is the same on SQLite, PostgreSQL and MariaDB.
    """
    quote = connection.dialect.identifier_preparer.quote
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    id_name = quote(info.id_column)
    head = f"SELECT {', '.join(quote(c) for c in info.columns)} FROM {quote(info.name)} WHERE "
    index = info.columns.index(info.id_column)
    last = after
    while True:
        conditions, params = [], []
        if last is not None:
            conditions.append(f"{id_name} > {mark}")
            params.append(last)
        if upto is not None:
            conditions.append(f"{id_name} <= {mark}")
            params.append(upto)
        sql = f"{head}{' AND '.join(conditions) or '1 = 1'} ORDER BY {id_name} LIMIT {int(chunk)}"
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, tuple(params))
            rows = cursor.fetchall()
        finally:
            cursor.close()
        connection.rollback()  # no long read transaction holding back the writers
        if rows:
            yield rows
        if len(rows) < chunk:
            return
        last = rows[-1][index]


def max_id(connection: Connection, info: TableInfo) -> int:
    """The largest id in the table (0 when empty)."""
    found = connection.execute(select(func.max(info.col(info.id_column)))).scalar()
    connection.rollback()
    return int(found or 0)


def merge_by_id(source: Iterator[tuple], target: Iterator[tuple], index: int) -> Iterator[tuple]:
    """Walk two id-ordered row streams together: yield ``(id, source_row|None, target_row|None)``."""
    s, t = next(source, None), next(target, None)
    while s is not None or t is not None:
        if t is None or (s is not None and s[index] < t[index]):
            yield s[index], s, None
            s = next(source, None)
        elif s is None or t[index] < s[index]:
            yield t[index], None, t
            t = next(target, None)
        else:
            yield s[index], s, t
            s, t = next(source, None), next(target, None)
