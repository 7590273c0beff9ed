"""One linked service's sync follower, as ``strangler up`` runs it: both directions, until SIGTERM.

``python -m strangler.stack_follow`` reads its job from ``STRANGLER_FOLLOW``
(JSON written by :func:`strangler.stack_data.follower_spec`): the service's
tables, the interval, and two directions (monolith -> service, service ->
monolith), each with its database URLs and watermark file. Each direction
runs in its own thread: a :class:`strangler.migrate.sync.Syncer` pass every
``interval`` seconds. A pass saves its figures (``lag``, when it ran) in
the watermark file, which is where ``strangler status`` reads them.

A failing pass (a peer database down, a conflict) never ends the
follower: the error goes to the log and into the state file's last pass
(``error``), and the next pass tries again with fresh connections.

**Settled changes only.** The apps write through every change at once;
the follower is the safety net, so it carries only changes at least
``SETTLE`` seconds old. ``updated_at`` is in whole seconds, and a follower
carrying a fresh row could otherwise overwrite a newer write-through made
in the *same* second (equal ``updated_at`` passes the newer-wins guard):
e.g. put a user back online on the monolith right after it went offline.
A change made after the follower read a settled row has a strictly greater
``updated_at``, so the guard keeps it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError

from strangler.migrate.bulk import reset_sequence
from strangler.migrate.sync import Syncer, SyncResult, SyncState, TableSync, Watermark, _apply
from strangler.migrate.tables import TIME_COLUMN, MigrateError, TableInfo, first_line
from strangler.stack_data import FOLLOW_ENV

SETTLE = 2  # seconds: changes younger than this are write-through's to carry


class SettledSyncer(Syncer):
    """A :class:`Syncer` whose passes carry only changes at least ``settle`` seconds old.

    (Until ``strangler.migrate.sync`` takes such a bound itself: the pass is
    its ``once``/``_sync_table`` with ``updated_at <= now - settle`` added.)
    """

    def __init__(self, *args: Any, settle: int = SETTLE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settle = settle

    def once(self) -> SyncResult:
        """One pass over every table up to ``now - settle``; saves the state; what it did."""
        started = time.time()
        upto = int(started) - self.settle
        done, oldest = [], None
        for s_info, t_info in self.infos:
            result, first = self._table(s_info, t_info, upto)
            done.append(result)
            if first is not None:
                oldest = first if oldest is None else min(oldest, first)
        finished = time.time()
        outcome = SyncResult(tuple(done), started, finished,
                             max(0.0, finished - oldest) if oldest is not None else 0.0)
        self.state.last_pass = {"started_at": started, "finished_at": finished, "lag": outcome.lag,
                                "applied": outcome.applied}
        self.state.save()
        return outcome

    def _table(self, s_info: TableInfo, t_info: TableInfo, upto: int) -> tuple[TableSync, float | None]:
        mark = self.state.tables.setdefault(s_info.name, Watermark())
        time_col, id_col = s_info.col(TIME_COLUMN), s_info.col(s_info.id_column)
        t_index, i_index = s_info.columns.index(TIME_COLUMN), s_info.columns.index(s_info.id_column)
        counts = {"read": 0, "inserted": 0, "updated": 0, "kept_newer": 0}
        newest, oldest, cursor = None, None, None
        with self.source.connect() as s_conn, self.target.connect() as t_conn:
            while True:
                query = (select(*[s_info.col(c) for c in s_info.columns]).where(time_col <= upto)
                         .order_by(time_col, id_col).limit(self.chunk))
                if cursor is None:
                    query = query.where(time_col >= mark.since)
                else:
                    query = query.where(or_(time_col > cursor[0],
                                            (time_col == cursor[0]) & (id_col > cursor[1])))
                rows = s_conn.execute(query).all()
                s_conn.rollback()
                if not rows:
                    break
                counts["read"] += len(rows)
                applied = _apply(t_conn, s_info, t_info, rows, counts)
                if applied:
                    oldest = min(applied) if oldest is None else min(oldest, *applied)
                cursor = newest = (rows[-1][t_index], rows[-1][i_index])
                if len(rows) < self.chunk:
                    break
        if counts["inserted"]:
            reset_sequence(self.target, t_info)
        if newest is not None:
            mark.since = max(mark.since, int(newest[0]) - self.overlap)
            mark.last_id = int(newest[1])
        return TableSync(s_info.name, **counts), oldest


def log(line: str) -> None:
    """One timestamped line on stdout (the follower's log file)."""
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def follow(direction: dict[str, Any], tables: list[str], interval: float, stop: threading.Event) -> None:
    """Sync one direction pass after pass until *stop* is set; errors are logged and retried."""
    state = SyncState.load(direction["state"])
    syncer: SettledSyncer | None = None
    failing = False
    while not stop.is_set():
        try:
            if syncer is None:
                syncer = SettledSyncer(direction["source"], direction["target"], tables, state,
                                       tuple(direction["labels"]))
            result = syncer.once()
            if result.applied or failing:
                parts = ", ".join(f"{t.table} +{t.inserted} ~{t.updated}" for t in result.tables)
                log(f"{direction['name']}: synced {result.applied} row(s) ({parts}); lag {result.lag:.1f} s")
            failing = False
        except (MigrateError, SQLAlchemyError) as exc:
            message = str(exc) if isinstance(exc, MigrateError) else first_line(exc)
            log(f"{direction['name']}: pass failed: {message}; retrying")
            state.last_pass = {**state.last_pass, "error": message, "error_at": time.time()}
            state.save()
            failing = True
            if syncer is not None:  # reconnect next time: the database may have gone away
                syncer.close()
                syncer = None
        stop.wait(interval)
    if syncer is not None:
        syncer.close()


def main() -> int:
    """Run the followers ``STRANGLER_FOLLOW`` describes until SIGTERM or SIGINT; exit 0."""
    try:
        spec = json.loads(os.environ[FOLLOW_ENV])
    except (KeyError, ValueError):
        print(f"{FOLLOW_ENV} must hold the follower's JSON job (strangler up sets it)", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threads = [
        threading.Thread(target=follow, args=(d, spec["tables"], spec["interval"], stop), name=d["name"])
        for d in spec["directions"]
    ]
    log(f"following {spec['service']} ({', '.join(spec['tables'])}) every {spec['interval']} s: "
        + "; ".join(d["name"] for d in spec["directions"]))
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(0.2)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
