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

from sqlalchemy import Connection

from datalink.tables import TableInfo, kind, to_target

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
