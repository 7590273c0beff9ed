"""The one upsert rule, and keeping id generators ahead of written ids.

Write-through (after each commit, in the apps) and the sync followers (the
toolkit's safety net) both carry rows with :func:`upsert_rows`: insert a row
the target lacks (id kept); update one whose content differs unless the
target's copy is newer (``updated_at``); leave an equal row alone; and hand
back, untouched, a row that is a different row under the same id
(``TableInfo.same_row``) for the caller to keep aside as a collision.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, bindparam, func, select, text
from sqlalchemy.exc import IntegrityError

from datalink.ids import Lane, next_id
from datalink.tables import (
    TIME_COLUMN,
    MigrateError,
    TableInfo,
    canonical_row,
    first_line,
    to_target,
)


def reset_sequence(engine: Engine, info: TableInfo) -> None:
    """Make the engine's next generated id come after the largest id in the table.

    PostgreSQL: ``setval`` on the column's sequence, never moving it
    backwards (the table is locked against inserts meanwhile) and keeping it
    in its id lane (``INCREMENT BY`` > 1). MariaDB: ``AUTO_INCREMENT = max + 1`` (InnoDB never lowers it
    below max + 1 either). SQLite picks max(rowid) + 1 by itself.
    """
    dialect = engine.dialect.name
    name, id_column = info.name, info.id_column
    with engine.begin() as connection:
        if dialect == "postgresql":
            # No insert into the table may take an id between the reads below and the setval: one
            # that did would have its id handed out again by the sequence moved from a stale read.
            # This lock waits for the inserts in flight to commit and holds new ones (a few ms).
            quoted = engine.dialect.identifier_preparer.quote(name)
            connection.execute(text(f"LOCK TABLE {quoted} IN SHARE ROW EXCLUSIVE MODE"))
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
                # stay in the sequence's id lane (datalink.ids) when it has one
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


def upsert_rows(t_conn: Any, s_info: TableInfo, t_info: TableInfo, rows: list,
                counts: dict) -> tuple[list[int], list[tuple]]:
    """Upsert *rows* into the target in one transaction, by sync's rule (the module docstring).

    Returns the updated_at of the rows applied, and the ``(row, target's
    row)`` pairs left alone because they are different rows under one id
    (``TableInfo.same_row``): collisions, for the caller to record.
    Write-through and the followers share this one rule.
    """
    id_name = s_info.id_column
    i_index, t_index = s_info.columns.index(id_name), s_info.columns.index(TIME_COLUMN)
    ids = [row[i_index] for row in rows]
    existing = {
        row[i_index]: row
        for row in t_conn.execute(
            select(*[t_info.col(c) for c in t_info.columns]).where(t_info.col(id_name).in_(ids))
        )
    }
    inserts, updates, applied, clashes = [], [], [], []
    for row in rows:
        there = existing.get(row[i_index])
        if there is None:
            inserts.append(to_target(s_info, t_info, row))
        elif canonical_row(there) == canonical_row(row):
            continue
        elif not s_info.same_row(row, there):
            clashes.append((row, there))
            continue
        elif there[t_index] > row[t_index]:
            counts["kept_newer"] += 1
            continue
        else:
            updates.append(update_params(t_info, to_target(s_info, t_info, row)))
        applied.append(row[t_index])
    try:
        if inserts:
            t_conn.execute(t_info.table.insert(), inserts)
        if updates:
            t_conn.execute(update_by_id(t_info, guard_time=True), updates)
        t_conn.commit()
    except IntegrityError as exc:
        t_conn.rollback()
        raise MigrateError(
            f"cannot write {s_info.name} rows {ids[0]}..{ids[-1]} into the target: {first_line(exc)}"
        ) from None
    counts["inserted"] += len(inserts)
    counts["updated"] += len(updates)
    return applied, clashes
