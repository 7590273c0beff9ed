"""Writing rows fast, and keeping id generators ahead of copied ids.

The hot paths of ``copy`` and ``sync``: :func:`bulk_insert` goes straight
through each driver's bulk interface; :func:`update_by_id` is an UPDATE by
id for executemany; :func:`reset_sequence` moves PostgreSQL sequences and
MariaDB AUTO_INCREMENT past the largest id.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, text

from strangler.migrate.ids import Lane, next_id
from strangler.migrate.tables import TIME_COLUMN, TableInfo, kind, to_target


def reset_sequence(engine: Engine, info: TableInfo) -> None:
    """Make the engine's next generated id come after the largest id in the table.

    PostgreSQL: ``setval`` on the column's sequence, never moving it
    backwards and keeping it in its id lane (``INCREMENT BY`` > 1). MariaDB: ``AUTO_INCREMENT = max + 1`` (InnoDB never lowers it
    below max + 1 either). SQLite picks max(rowid) + 1 by itself.
    """
    dialect = engine.dialect.name
    name, id_column = info.name, info.id_column
    with engine.begin() as connection:
        top = connection.execute(select(func.max(info.col(id_column)))).scalar() or 0
        if dialect == "postgresql":
            sequence = connection.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": name, "c": id_column}
            ).scalar()
            if sequence is None:
                return
            increment, last, called = connection.execute(text(
                "SELECT s.seqincrement, l.last_value, l.is_called FROM pg_sequence s, "
                f"{sequence} l WHERE s.seqrelid = CAST(:s AS regclass)"), {"s": sequence}).one()
            coming = last + increment if called else last  # what nextval would give
            if coming <= top:  # the next id would collide
                # stay in the sequence's id lane (strangler.migrate.ids) when it has one
                lane = Lane(coming % increment or increment, increment)
                connection.execute(text("SELECT setval(:s, :v, false)"),
                                   {"s": sequence, "v": next_id(top, lane)})
        elif dialect in ("mysql", "mariadb"):
            connection.execute(text(f"ALTER TABLE `{name}` AUTO_INCREMENT = {int(top) + 1}"))


def update_by_id(info: TableInfo, guard_time: bool = False) -> Any:
    """An UPDATE of every column by id, for executemany with :func:`update_params`.

    With *guard_time*, a row whose ``updated_at`` is already newer than the
    one being written is left alone (a change made meanwhile is not lost).
    """
    id_col = info.col(info.id_column)
    statement = info.table.update().where(id_col == bindparam("k_id"))
    if guard_time:
        statement = statement.where(info.col(TIME_COLUMN) <= bindparam(f"v_{TIME_COLUMN}"))
    return statement.values({c: bindparam(f"v_{c}") for c in info.columns if c != info.id_column})


def update_params(info: TableInfo, values: dict[str, Any]) -> dict[str, Any]:
    """Bind values for :func:`update_by_id` from a row's ``{column: value}``."""
    params = {f"v_{c}": v for c, v in values.items() if c != info.id_column}
    params["k_id"] = values[info.id_column]
    return params


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    # PostgreSQL's COPY text format: tab-separated, \N for NULL, backslash escapes
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\\\x" + bytes(value).hex()
    return str(value)


def _copy_from(target: TableInfo, names: str, table: str, rows: Sequence[Sequence[Any]],
               quote: Any) -> tuple[str, io.StringIO]:
    """The COPY statement and its data. CSV (written in C by the csv module) when NULL is
    unambiguous: csv writes None and "" alike, so text columns must be NOT NULL (and then
    FORCE_NOT_NULL reads an empty field as ""); otherwise the slower text format."""
    buffer = io.StringIO()
    columns = [target.col(c) for c in target.columns]
    nullable_text = any(c.nullable and kind(c.type) in ("str", "bytes", "other") for c in columns)
    if nullable_text:
        buffer.writelines("\t".join(map(_copy_text, row)) + "\n" for row in rows)
        buffer.seek(0)
        return f"COPY {table} ({names}) FROM STDIN", buffer
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    buffer.seek(0)
    texts = ", ".join(quote(c.name) for c in columns if kind(c.type) == "str")
    force = f", FORCE_NOT_NULL ({texts})" if texts else ""
    return f"COPY {table} ({names}) FROM STDIN WITH (FORMAT csv{force})", buffer


def bulk_insert(connection: Connection, source: TableInfo, target: TableInfo,
                rows: Sequence[Sequence[Any]]) -> None:
    """Insert *rows* (in *source*'s column order) into *target* in the connection's transaction.

    The engine's fastest bulk path, straight through the driver: PostgreSQL
    ``COPY ... FROM STDIN``, SQLite and MariaDB ``executemany`` on tuples
    (pymysql folds it into multi-row INSERTs). Other engines get SQLAlchemy's
    executemany.
    """
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in source.columns)
    table = quote(target.name)
    if dialect.name == "postgresql":
        cursor = connection.connection.cursor()
        try:
            cursor.copy_expert(*_copy_from(target, names, table, rows, quote))
        finally:
            cursor.close()
    elif dialect.name == "sqlite" or dialect.driver == "pymysql":
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        marks = ", ".join([mark] * len(source.columns))
        cursor = connection.connection.cursor()
        try:
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})",
                               [tuple(row) for row in rows])
        finally:
            cursor.close()
    else:
        connection.execute(target.table.insert(), [to_target(source, target, row) for row in rows])
