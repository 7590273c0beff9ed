"""``copy``: move a service's tables out of the monolith's database, in bulk, resumably.

How it stays idempotent and resumable: the target's ``max(id)`` is where a
table's copy stands. Rows with ``id > max`` are copied in chunks ordered by
id (keyset pagination), each chunk in its own transaction, so a ``kill -9``
loses at most the chunk in flight and the next run starts right after the
last committed one. Rows with ``id <= max`` are compared with the source
first (one merge pass by id, bounded memory):

- equal rows are skipped (a second run copies 0 rows);
- rows the source changed later (its ``updated_at`` >= the target's) are
  refreshed — exactly what ``sync`` would do;
- ids only the target has, rows the target changed later than the source,
  or rows created separately under the same id (``created_at`` differs)
  mean the target has *diverged*: copy refuses before writing
  anything, in any table.

Ids are kept; afterwards PostgreSQL sequences and MariaDB AUTO_INCREMENT are
moved past the largest id, so the service's next insert does not collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, func, select

from datalink.tables import (
    CHUNK,
    TIME_COLUMN,
    MigrateError,
    TableInfo,
    canonical_row,
    iter_chunks,
    iter_rows,
    max_id,
    merge_by_id,
    pair,
    reflect,
    to_target,
)
from datalink.upsert import reset_sequence, update_by_id, update_params
from strangler.migrate.bulk import bulk_insert

# called with (table, rows just written); copy never prints by itself
Progress = Callable[[str, int], None]


@dataclass
class TablePlan:
    """What copying one table will do, worked out before anything is written."""

    source: TableInfo
    target: TableInfo
    target_max: int
    to_copy: int  # rows with id > target_max (counted when planned)
    stale_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # columns only one side has (not blocking)


@dataclass(frozen=True)
class TableCopy:
    """What copying one table did."""

    table: str
    copied: int
    refreshed: int
    seconds: float


@dataclass(frozen=True)
class CopyResult:
    """What a copy did, per table, with totals."""

    tables: tuple[TableCopy, ...]
    seconds: float

    @property
    def rows(self) -> int:
        """Rows written: copied plus refreshed."""
        return sum(t.copied + t.refreshed for t in self.tables)

    @property
    def rate(self) -> float:
        """Rows written per second."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def plan_copy(source: Engine, target: Engine, tables: list[str],
              labels: tuple[str, str] = ("source", "target"), sample_ids: int = 5,
              identities: Mapping[str, Sequence[str]] | None = None) -> list[TablePlan]:
    """Check schemas and divergence of every table; return what to copy. Writes nothing.

    *identities*: the plan's identity columns per table (``TableInfo.same_row``).

    MigrateError names the first table whose schema does not match or whose
    target has diverged (with a few ids).
    """
    plans = []
    for name in tables:
        identity = (identities or {}).get(name)
        s_info = reflect(source, name, labels[0], identity)
        t_info = reflect(target, name, labels[1], identity)
        paired = pair(s_info, t_info, labels)
        if paired.problems:
            more = len(paired.problems) - 1
            raise MigrateError(f"cannot copy between the {labels[0]} and {labels[1]} databases: "
                               f"{paired.problems[0]}{f' (and {more} more)' if more else ''}")
        planned = _plan_table(source, target, paired.source, paired.target, labels, sample_ids)
        planned.notes = paired.notes
        plans.append(planned)
    return plans


def _plan_table(source: Engine, target: Engine, s_info: TableInfo, t_info: TableInfo,
                labels: tuple[str, str], sample_ids: int) -> TablePlan:
    index = s_info.columns.index(s_info.id_column)
    time_index = s_info.columns.index(TIME_COLUMN) if s_info.has_time else None
    only_target: list[int] = []
    newer: list[int] = []
    stale: list[int] = []
    with source.connect() as s_conn, target.connect() as t_conn:
        top = max_id(t_conn, t_info)
        pairs = merge_by_id(iter_rows(s_conn, s_info, upto=top), iter_rows(t_conn, t_info), index)
        for row_id, s_row, t_row in pairs:
            if s_row is None:
                only_target.append(row_id)
            elif t_row is not None and canonical_row(s_row) != canonical_row(t_row):
                if not s_info.same_row(s_row, t_row) or (
                        time_index is not None and t_row[time_index] > s_row[time_index]):
                    newer.append(row_id)
                else:
                    stale.append(row_id)
        to_copy = _count_after(s_conn, s_info, top)
    if only_target or newer:
        what = (f"{len(only_target)} id(s) the {labels[0]} lacks, e.g. {only_target[:sample_ids]}"
                if only_target else
                f"{len(newer)} row(s) created or changed there later than in the {labels[0]}, "
                f"e.g. {newer[:sample_ids]}")
        raise MigrateError(
            f"the {labels[1]} table {s_info.name!r} has diverged ({what}); "
            f"reconcile it (or empty it) before copying"
        )
    return TablePlan(s_info, t_info, top, to_copy, stale)


def _count_after(connection: Connection, info: TableInfo, after: int) -> int:
    found = connection.execute(
        select(func.count()).select_from(info.table).where(info.col(info.id_column) > after)
    ).scalar()
    connection.rollback()
    return int(found or 0)


def run_copy(source: Engine, target: Engine, plans: list[TablePlan],
             chunk: int = CHUNK, progress: Progress | None = None) -> CopyResult:
    """Copy what *plans* say, chunk by chunk (one transaction each); reset sequences."""
    started = time.perf_counter()
    done = []
    for item in plans:
        t0 = time.perf_counter()
        refreshed = _refresh(source, target, item, chunk, progress)
        copied = _copy_new(source, target, item, chunk, progress)
        reset_sequence(target, item.target)
        done.append(TableCopy(item.source.name, copied, refreshed, time.perf_counter() - t0))
    return CopyResult(tuple(done), time.perf_counter() - started)


def _copy_new(source: Engine, target: Engine, item: TablePlan, chunk: int,
              progress: Progress | None) -> int:
    s_info, t_info = item.source, item.target
    copied = 0
    with source.connect() as s_conn, target.connect() as t_conn:
        for batch in iter_chunks(s_conn, s_info, after=item.target_max, chunk=chunk):
            with t_conn.begin():  # one transaction per chunk: a kill loses at most this one
                bulk_insert(t_conn, s_info, t_info, batch)
            copied += len(batch)
            if progress:
                progress(s_info.name, len(batch))
    return copied


def _refresh(source: Engine, target: Engine, item: TablePlan, chunk: int,
             progress: Progress | None) -> int:
    """Rewrite the rows the source changed after they were copied (the ids found stale)."""
    if not item.stale_ids:
        return 0
    s_info, t_info = item.source, item.target
    id_name = s_info.id_column
    update = update_by_id(t_info)
    done = 0
    with source.connect() as s_conn, target.connect() as t_conn:
        for start in range(0, len(item.stale_ids), chunk):
            ids = item.stale_ids[start:start + chunk]
            rows = s_conn.execute(
                select(*[s_info.col(c) for c in s_info.columns]).where(s_info.col(id_name).in_(ids))
            ).all()
            s_conn.rollback()
            params = [update_params(t_info, to_target(s_info, t_info, row)) for row in rows]
            with t_conn.begin():
                t_conn.execute(update, params)
            done += len(params)
            if progress:
                progress(s_info.name, len(params))
    return done
