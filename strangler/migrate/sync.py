"""``sync``: carry what changed in one database's tables into another's, once or in a loop.

Every change the apps make stamps ``updated_at`` (integer seconds, set on
each flush that modifies a row, ``last_seen_at``/``online`` included), so a
pass reads the rows with ``updated_at >= since``, ordered by
``(updated_at, id)`` with keyset pagination, and upserts them by id:

- a row the target lacks is inserted (id kept);
- a row whose content differs is updated, unless the target's copy is newer
  (``updated_at`` greater): last writer wins, and the UPDATE itself is
  guarded by ``updated_at <= :new`` so a change made meanwhile is not lost;
- an equal row is left alone, which makes re-reading harmless.

``since`` then moves to the newest ``updated_at`` seen minus ``overlap``
seconds: the last second is always read again (a change in the same second
as the previous pass is not missed), and so is a short window in which a
slow transaction stamped earlier may commit late. Because equal rows are
skipped, passes are idempotent, and syncing both ways does not ping-pong.

Deletes are not carried: the apps never delete users or messages.

The reusable API (what ``strangler up`` and ``status`` build on):
:class:`SyncState` (watermarks in a small JSON file in the run dir),
:func:`sync_once` → :class:`SyncResult` (with ``lag``), :class:`Syncer`
(keeps the engines open; ``once()`` and ``follow()``), :func:`read_status`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, or_, select

from datalink import collisions
from datalink.files import write_private
from datalink.tables import (
    CHUNK,
    TIME_COLUMN,
    MigrateError,
    TableInfo,
    column_names,
    open_engine,
    pair,
    reflect,
)
from datalink.upsert import reset_sequence, upsert_rows

OVERLAP = 2  # seconds re-read every pass, beyond the last one
RESHAPE = 5.0  # seconds between re-reading the tables' columns (a schema may change while linked)


@dataclass
class Watermark:
    """Where one table's sync stands: changes with ``updated_at >= since`` are read next pass."""

    since: int = 0
    last_id: int = 0  # the id of the newest change seen (for people reading the state file)


@dataclass
class SyncState:
    """Watermarks per table, plus the last pass's figures; saved as JSON at ``path`` (if any)."""

    path: Path | None = None
    tables: dict[str, Watermark] = field(default_factory=dict)
    last_pass: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str | None) -> SyncState:
        """Read the state at *path*; a missing file is a fresh state (everything is read once)."""
        if path is None:
            return cls()
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise MigrateError(f"sync state {path} is unreadable ({exc}); delete it to sync from scratch") from None
        tables = {name: Watermark(**mark) for name, mark in data.get("tables", {}).items()}
        return cls(path, tables, data.get("last_pass", {}))

    def save(self) -> None:
        """Write the state atomically (a crash leaves the old or the new one, never half)."""
        if self.path is None:
            return
        data = {"tables": {n: asdict(m) for n, m in self.tables.items()}, "last_pass": self.last_pass}
        write_private(self.path, json.dumps(data, indent=1))

    def start_at(self, table: str, since: int) -> None:
        """Make sure *table*'s next pass reads every change from *since* on (never moves forward)."""
        mark = self.tables.setdefault(table, Watermark(since))
        mark.since = min(mark.since, since)


@dataclass(frozen=True)
class TableSync:
    """What one pass did to one table."""

    table: str
    read: int = 0
    inserted: int = 0
    updated: int = 0
    kept_newer: int = 0  # differing rows left alone because the target's copy is newer
    collisions: int = 0  # different rows under one id: left alone, moved aside (collisions.py)


@dataclass(frozen=True)
class SyncResult:
    """One pass: per-table counts, when it ran, and the lag.

    ``lag``: for the changes this pass applied, the longest time between a
    change being made (its ``updated_at``) and it landing in the target
    (0.0 when nothing was behind). ``synced_through``: every change
    committed before this instant is in the target (the pass's start).
    """

    tables: tuple[TableSync, ...]
    started_at: float
    finished_at: float
    lag: float

    @property
    def applied(self) -> int:
        """Rows inserted or updated in the target."""
        return sum(t.inserted + t.updated for t in self.tables)

    @property
    def synced_through(self) -> float:
        """Wall-clock time up to which the target has every committed change."""
        return self.started_at


class Syncer:
    """Sync *tables* from *source_url* to *target_url*, keeping both engines open between passes."""

    def __init__(self, source_url: str, target_url: str, tables: list[str], state: SyncState,
                 labels: tuple[str, str] = ("source", "target"), overlap: int = OVERLAP,
                 chunk: int = CHUNK, identities: Mapping[str, Sequence[str]] | None = None,
                 settle: int | None = None) -> None:
        self.state, self.overlap, self.chunk, self.settle = state, overlap, chunk, settle
        self.labels, self.identities = labels, identities or {}
        self.source = open_engine(source_url, labels[0])
        self.tables, self.notes = list(tables), []
        try:
            self.target = open_engine(target_url, labels[1])
            self.reshape()
        except MigrateError:
            self.close()
            raise

    def reshape(self) -> None:
        """(Re-)read both sides' tables and line them up on their shared columns.

        Run at start and again every ``RESHAPE`` seconds, so a column added
        on both sides while linked is carried from then on; a column on one
        side only is a note (``self.notes``), a blocking mismatch MigrateError.
        """
        infos, notes, columns = [], [], {}
        for name in self.tables:
            identity = self.identities.get(name)
            paired = pair(reflect(self.source, name, self.labels[0], identity),
                          reflect(self.target, name, self.labels[1], identity), self.labels, needs_time=True)
            if paired.problems:
                raise MigrateError(f"cannot sync between the {self.labels[0]} and {self.labels[1]} "
                                   f"databases: {paired.problems[0]}")
            infos.append((paired.source, paired.target))
            notes.extend(paired.notes)
            columns[name] = (column_names(self.source, name), column_names(self.target, name))
        self.infos, self.notes, self._shaped_at = infos, notes, time.monotonic()
        self._columns = columns

    def _shape_changed(self) -> bool:
        """Whether either side's tables now have other columns than when last reflected (cheap).

        Checked before every pass: a pass carrying a row with a stale shape would
        stamp the target's copy as new as the source's without a column both now
        have, and the other direction would then carry that gap back.
        """
        for name, (source_known, target_known) in self._columns.items():
            if column_names(self.source, name) != source_known or column_names(self.target, name) != target_known:
                return True
        return False

    def close(self) -> None:
        """Dispose both engines."""
        for engine in (getattr(self, "source", None), getattr(self, "target", None)):
            if engine is not None:
                engine.dispose()

    def once(self) -> SyncResult:
        """Run one pass over every table, save the state, and return what it did."""
        if time.monotonic() - self._shaped_at > RESHAPE or self._shape_changed():
            self.reshape()
        started = time.time()
        # with settle: only changes at least that old (fresher ones are write-through's)
        upto = int(started) - self.settle if self.settle is not None else None
        done, oldest = [], None
        for s_info, t_info in self.infos:
            result, first_change = _sync_table(self.source, self.target, s_info, t_info,
                                               self.state, self.overlap, self.chunk, self.labels[0], upto)
            done.append(result)
            if first_change is not None:
                oldest = first_change if oldest is None else min(oldest, first_change)
        finished = time.time()
        lag = max(0.0, finished - oldest) if oldest is not None else 0.0
        outcome = SyncResult(tuple(done), started, finished, lag)
        recorded = collisions.count(self.target, [s.name for s, _t in self.infos])
        self.state.last_pass = {"started_at": started, "finished_at": finished, "lag": lag,
                                "applied": outcome.applied, "collisions": recorded}
        if self.notes:
            self.state.last_pass["notes"] = self.notes
        self.state.save()
        return outcome

    def follow(self, interval: float = 1.0, stop: threading.Event | None = None,
               max_passes: int | None = None,
               on_pass: Callable[[SyncResult], None] | None = None) -> int:
        """Pass after pass, *interval* seconds apart, until *stop* is set or *max_passes* ran.

        Calls *on_pass* after each pass; returns how many passes ran. Ctrl-C
        (KeyboardInterrupt) propagates to the caller between or during passes.
        """
        stop = stop or threading.Event()
        passes = 0
        while not stop.is_set() and (max_passes is None or passes < max_passes):
            result = self.once()
            passes += 1
            if on_pass:
                on_pass(result)
            if max_passes is None or passes < max_passes:
                stop.wait(interval)
        return passes

    def __enter__(self) -> Syncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sync_once(source_url: str, target_url: str, tables: list[str], state: SyncState,
              **options: Any) -> SyncResult:
    """One pass of :class:`Syncer` (opening and closing the engines); see the module docstring."""
    with Syncer(source_url, target_url, tables, state, **options) as syncer:
        return syncer.once()


def read_status(path: Path | str) -> dict[str, Any] | None:
    """The last pass saved at *path* plus ``behind`` (seconds since it started); None if never run."""
    state = SyncState.load(path)
    if not state.last_pass:
        return None
    return {**state.last_pass, "behind": max(0.0, time.time() - state.last_pass["started_at"])}


def _sync_table(source: Engine, target: Engine, s_info: TableInfo, t_info: TableInfo,
                state: SyncState, overlap: int, chunk: int,
                label: str = "source", upto: int | None = None) -> tuple[TableSync, float | None]:
    mark = state.tables.setdefault(s_info.name, Watermark())
    time_col, id_col = s_info.col(TIME_COLUMN), s_info.col(s_info.id_column)
    t_index, i_index = s_info.columns.index(TIME_COLUMN), s_info.columns.index(s_info.id_column)
    counts = {"read": 0, "inserted": 0, "updated": 0, "kept_newer": 0, "collisions": 0}
    newest, oldest_applied, cursor = None, None, None
    with source.connect() as s_conn, target.connect() as t_conn:
        while True:
            query = select(*[s_info.col(c) for c in s_info.columns]).order_by(time_col, id_col).limit(chunk)
            if upto is not None:
                query = query.where(time_col <= upto)
            if cursor is None:
                query = query.where(time_col >= mark.since)
            else:
                query = query.where(or_(time_col > cursor[0], (time_col == cursor[0]) & (id_col > cursor[1])))
            rows = s_conn.execute(query).all()
            s_conn.rollback()
            if not rows:
                break
            counts["read"] += len(rows)
            applied, clashes = upsert_rows(t_conn, s_info, t_info, rows, counts)
            if clashes:
                counts["collisions"] += len(clashes)
                collisions.record(target, t_info, clashes, came_from=label)
            if applied:
                first = min(applied)
                oldest_applied = first if oldest_applied is None else min(oldest_applied, first)
            cursor = (rows[-1][t_index], rows[-1][i_index])
            newest = cursor
            if len(rows) < chunk:
                break
    if counts["inserted"]:
        reset_sequence(target, t_info)
    if newest is not None:
        mark.since = max(mark.since, int(newest[0]) - overlap)
        mark.last_id = int(newest[1])
    return TableSync(s_info.name, **counts), oldest_applied
