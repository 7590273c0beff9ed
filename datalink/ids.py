"""Id lanes: while a table is linked, each database hands out ids from its own residue class.

Two databases holding one table each allocate the next id themselves. At a
flip, for a few milliseconds, both backends insert (Traefik switches
instance by instance, and requests already in flight finish where they
started); with one shared sequence of ids both would hand out the same id,
and the write-through would meet two different rows under it. So while a
table is linked, its ids are split into *lanes*: with ``stride`` 2 the
monolith's database allocates only ids ``≡ 1 (mod 2)`` (1, 3, 5, ...) and
the owning service's only ids ``≡ 0`` (2, 4, 6, ...). A lane is written
as ``(offset, stride)``, ``1 <= offset <= stride``, the ids being
``offset + k * stride``, as MariaDB's ``auto_increment_offset`` reads.
Ids already handed out never change; a lane only decides the next ones:
the smallest id of the lane above every id the table holds.

Each engine gets the lane its own way, concurrency-safe:

- **PostgreSQL**: the column's sequence gets ``INCREMENT BY stride`` and is
  moved onto its lane (:func:`configure_sequence`, run by ``strangler up``
  before any backend starts; idempotent, never moves a sequence backwards);
- **MariaDB**: every connection of the app sets ``auto_increment_increment``
  and ``auto_increment_offset`` (:func:`install_lanes`);
- **SQLite**: the app assigns the id itself in ``before_flush``, from
  ``max(id)`` read inside the transaction; the apps open SQLite
  transactions with ``BEGIN IMMEDIATE``, so no other writer runs between
  the read and the insert (:func:`install_lanes`).

Rows written through or synced from the other side keep their ids, which
lie in the other lane, so they never take an id this side will allocate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # the lanes themselves are pure: `strangler up` computes them without SQLAlchemy
    from sqlalchemy import Engine

logger = logging.getLogger(__name__)

STRIDE = 2


class Lane(NamedTuple):
    """Ids ``offset + k * stride`` (``1 <= offset <= stride``)."""

    offset: int
    stride: int

    def __str__(self) -> str:
        return f"ids = {self.offset % self.stride} mod {self.stride}"


def parse_lane(raw: Any, where: str) -> Lane:
    """PURE: a Lane from ``[offset, stride]``; ValueError naming *where* and the fix."""
    if (not isinstance(raw, list | tuple) or len(raw) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw)):
        raise ValueError(f"{where}: an id lane is [offset, stride], e.g. [1, 2], not {raw!r}")
    offset, stride = raw
    if not 1 <= offset <= stride:
        raise ValueError(f"{where}: an id lane needs 1 <= offset <= stride, not {raw!r}")
    return Lane(offset, stride)


def next_id(top: int, lane: Lane) -> int:
    """PURE: the smallest id of *lane* greater than *top* (the largest id in the table, 0 if none)."""
    step = (lane.offset - (top + 1)) % lane.stride
    return top + 1 + step


def lane_of(owner_index: int, stride: int = STRIDE) -> Lane:
    """PURE: the lane of the *owner_index*-th database of a linked table (0: the monolith's)."""
    return Lane(owner_index + 1, stride)


# ---- PostgreSQL: the sequence itself -------------------------------------------------------


def sequence_name(connection: Any, table: str, column: str) -> str | None:
    """The PostgreSQL sequence behind *table*.*column*, or None when it has none."""
    from sqlalchemy import text

    return connection.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                              {"t": table, "c": column}).scalar()


def configure_sequence(engine: Engine, table: str, id_column: str, lane: Lane) -> bool:
    """Put a PostgreSQL table's id sequence on *lane*; return whether anything changed.

    ``INCREMENT BY stride``, then the next value becomes the smallest of the
    lane above both the table's largest id and the sequence's last value
    (never backwards). Other engines: nothing to do here (see install_lanes).
    """
    from sqlalchemy import text

    if engine.dialect.name != "postgresql":
        return False
    with engine.begin() as connection:
        sequence = sequence_name(connection, table, id_column)
        if sequence is None:
            return False
        increment, last, called = connection.execute(text(
            "SELECT s.seqincrement, l.last_value, l.is_called FROM pg_sequence s, "
            f"{sequence} l WHERE s.seqrelid = CAST(:s AS regclass)"), {"s": sequence}).one()
        top = connection.execute(text(
            f'SELECT max("{id_column}") FROM "{table}"')).scalar() or 0
        coming = last + increment if called else last  # what nextval would give
        if increment == lane.stride and coming % lane.stride == lane.offset % lane.stride \
                and coming > top:
            return False
        wanted = next_id(max(top, coming - 1), lane)
        connection.execute(text(f"ALTER SEQUENCE {sequence} INCREMENT BY {int(lane.stride)}"))
        connection.execute(text("SELECT setval(:s, :v, false)"), {"s": sequence, "v": wanted})
    logger.info("%s.%s: ids from %s on, %s", table, id_column, wanted, lane)
    return True


# ---- in the apps: MariaDB sessions and SQLite's allocation ----------------------------------


def install_lanes(engine: Engine, session_target: Any, lanes: Mapping[str, Lane],
                  only: Callable[[], bool] = lambda: True) -> None:
    """Make the app's inserts into the tables of *lanes* take ids from their lane only.

    MariaDB/MySQL: the session variables on every connection of *engine*
    (all of an app's lanes must then agree). SQLite: ids assigned in
    ``before_flush`` of *session_target*, for flushes where *only()* is true
    (several apps may share one session class in a process).
    PostgreSQL: nothing here; ``strangler up`` configured the sequences.
    """
    if not lanes:
        return
    dialect = engine.dialect.name
    if dialect in ("mysql", "mariadb"):
        _session_lane(engine, lanes)
    elif dialect == "sqlite":
        _assign_ids(session_target, lanes, only)


def _session_lane(engine: Engine, lanes: Mapping[str, Lane]) -> None:
    from sqlalchemy import event

    distinct = set(lanes.values())
    if len(distinct) != 1:
        raise ValueError(f"on MariaDB every linked table of one database shares a lane, not {lanes}")
    lane = distinct.pop()

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # increment first: MariaDB ignores an offset larger than the increment
        cursor.execute(f"SET SESSION auto_increment_increment = {int(lane.stride)}")
        cursor.execute(f"SET SESSION auto_increment_offset = {int(lane.offset)}")
        cursor.close()

    engine.dispose()  # connections opened before this lack the variables


def _assign_ids(session_target: Any, lanes: Mapping[str, Lane], only: Callable[[], bool]) -> None:
    from sqlalchemy import event, func, inspect, select

    def before_flush(session: Any, flush_context: Any, instances: Any) -> None:
        if not only():
            return
        tops: dict[str, int] = {}
        for obj in list(session.new):
            mapper = inspect(obj).mapper
            table = mapper.local_table
            lane = lanes.get(table.name)
            if lane is None:
                continue
            id_column = next(iter(table.primary_key.columns))
            prop = mapper.get_property_by_column(id_column)
            if getattr(obj, prop.key) is not None:
                continue
            if table.name not in tops:
                # the session's connection: BEGIN IMMEDIATE holds the write lock
                # from here to the commit, so max(id) stays the max
                tops[table.name] = session.connection(bind_arguments={"mapper": mapper}).execute(
                    select(func.coalesce(func.max(id_column), 0))).scalar()
            tops[table.name] = next_id(tops[table.name], lane)
            setattr(obj, prop.key, tops[table.name])

    event.listen(session_target, "before_flush", before_flush)
