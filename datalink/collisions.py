"""Collisions: two different rows that met under one id, kept both and reported.

Id lanes (``datalink.ids``) keep linked databases from handing out
the same id; a collision can still come from rows made before the lanes, a
database written by hand, or a lane misconfigured. When write-through or a
follower carries a row into a database that holds a *different* row under
that id (``TableInfo.same_row`` says no), neither overwrites the other: the
database keeps its own row, and the incoming one is moved aside into the
table ``strangler_collisions`` of that database, with where it came from.
Nothing is lost, and ``strangler status`` (through the followers) and
``strangler migrate verify`` name the ids until a person reconciles them.

Recording happens in a transaction of its own, after the upsert's: on
MariaDB creating the table commits implicitly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
)

from datalink.tables import TableInfo, canonical_row

TABLE_NAME = "strangler_collisions"

_metadata = MetaData()
collisions = Table(
    TABLE_NAME, _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("table_name", String(128), nullable=False, index=True),
    Column("row_id", BigInteger, nullable=False),
    Column("came_from", String(255), nullable=False),
    Column("kept", Text, nullable=False),    # this database's row under that id, as it was
    Column("moved", Text, nullable=False),   # the other database's row, moved aside here
    Column("noted_at", Float, nullable=False),
)


def _json_row(info: TableInfo, row: Sequence[Any]) -> str:
    return json.dumps(dict(zip(info.columns, canonical_row(row), strict=True)), sort_keys=True)


def record(engine: Engine, info: TableInfo, pairs: Iterable[tuple[Sequence[Any], Sequence[Any]]],
           came_from: str) -> int:
    """Keep each ``(incoming row, row here)`` pair in *engine*'s collisions table; return how many are new.

    A pair recorded before (same table, id and incoming row) is not recorded
    twice: followers read the same rows again on later passes.
    """
    pairs = list(pairs)
    if not pairs:
        return 0
    index = info.columns.index(info.id_column)
    added = 0
    _metadata.create_all(engine, checkfirst=True)
    with engine.begin() as connection:
        for incoming, here in pairs:
            moved = _json_row(info, incoming)
            seen = connection.execute(select(collisions.c.id).where(
                collisions.c.table_name == info.name, collisions.c.row_id == incoming[index],
                collisions.c.moved == moved)).first()
            if seen is None:
                connection.execute(collisions.insert().values(
                    table_name=info.name, row_id=incoming[index], came_from=came_from[:255],
                    kept=_json_row(info, here), moved=moved, noted_at=time.time()))
                added += 1
    return added


def recorded_ids(engine: Engine, tables: Iterable[str]) -> dict[str, list[int]]:
    """``{table: [ids]}`` of the collisions recorded in *engine* for *tables* (none: empty lists)."""
    names = list(tables)
    found: dict[str, list[int]] = {name: [] for name in names}
    if not inspect(engine).has_table(TABLE_NAME):
        return found
    with engine.connect() as connection:
        rows = connection.execute(
            select(collisions.c.table_name, collisions.c.row_id)
            .where(collisions.c.table_name.in_(names)).distinct()
            .order_by(collisions.c.table_name, collisions.c.row_id))
        for table, row_id in rows:
            found[table].append(int(row_id))
    return found


def count(engine: Engine, tables: Iterable[str]) -> int:
    """How many distinct ids of *tables* have a recorded collision in *engine*."""
    names = list(tables)
    if not inspect(engine).has_table(TABLE_NAME):
        return 0
    with engine.connect() as connection:
        ids = select(collisions.c.table_name, collisions.c.row_id).where(
            collisions.c.table_name.in_(names)).distinct().subquery()
        return int(connection.execute(select(func.count()).select_from(ids)).scalar() or 0)
