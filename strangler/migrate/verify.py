"""``verify``: compare a table in two databases, by row counts and a content checksum.

Both sides are read in id order, a chunk at a time (bounded memory), and
walked together by id. Each row is put in canonical form (booleans as 0/1,
floats by ``repr``, NULL as None) and fed to a SHA-256 as its ``repr`` plus
a newline, so the checksum is computed the same way in Python whatever the
engine: equal tables give equal checksums on SQLite, PostgreSQL and MariaDB.
Only the columns both sides have are compared (a column one side lacks
is reported as a note, see ``tables.pair``). The walk also collects the first few ids that differ (missing on one side,
or different content), and every *collision*: an id under which the two
sides hold different rows (``TableInfo.same_row``), or one recorded in
either side's ``strangler_collisions`` (``datalink.collisions``).
A table with a collision never verifies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from datalink import collisions
from datalink.tables import (
    CHUNK,
    canonical_row,
    iter_rows,
    merge_by_id,
    pair,
    reflect,
)

SAMPLE_IDS = 5


@dataclass(frozen=True)
class TableCheck:
    """The comparison of one table: counts, checksums and a few differing ids."""

    table: str
    source_rows: int
    target_rows: int
    source_sum: str
    target_sum: str
    differing: int
    sample_ids: tuple[int, ...]
    schema: str | None = None  # a schema mismatch, when the columns could not be compared
    collisions: tuple[int, ...] = ()  # ids holding two different rows (either side), all of them
    notes: tuple[str, ...] = ()  # columns only one side has: compared on the shared ones

    @property
    def ok(self) -> bool:
        """Whether both sides hold exactly the same rows, and no id ever held two."""
        return (self.schema is None and self.differing == 0 and not self.collisions
                and self.source_sum == self.target_sum)


def verify_table(source: Engine, target: Engine, name: str,
                 labels: tuple[str, str] = ("source", "target"), chunk: int = CHUNK,
                 identity: Sequence[str] | None = None) -> TableCheck:
    """Compare table *name* in *source* and *target*; see the module docstring.

    *identity*: the plan's identity columns for the table (``TableInfo.same_row``).
    """
    paired = pair(reflect(source, name, labels[0], identity), reflect(target, name, labels[1], identity),
                  labels)
    if paired.problems:
        return TableCheck(name, 0, 0, "", "", 0, (), paired.problems[0])
    s_info, t_info = paired.source, paired.target
    index = s_info.columns.index(s_info.id_column)
    s_hash, t_hash = hashlib.sha256(), hashlib.sha256()
    s_rows = t_rows = differing = 0
    sample: list[int] = []
    clashing = set(collisions.recorded_ids(source, [name])[name])
    clashing.update(collisions.recorded_ids(target, [name])[name])
    with source.connect() as s_conn, target.connect() as t_conn:
        pairs = merge_by_id(iter_rows(s_conn, s_info, chunk=chunk),
                            iter_rows(t_conn, t_info, chunk=chunk), index)
        for row_id, s_row, t_row in pairs:
            s_value = canonical_row(s_row) if s_row is not None else None
            t_value = canonical_row(t_row) if t_row is not None else None
            if s_value is not None:
                s_rows += 1
                s_hash.update(repr(s_value).encode() + b"\n")
            if t_value is not None:
                t_rows += 1
                t_hash.update(repr(t_value).encode() + b"\n")
            if s_value != t_value:
                if s_row is not None and t_row is not None and not s_info.same_row(s_row, t_row):
                    clashing.add(row_id)
                differing += 1
                if len(sample) < SAMPLE_IDS:
                    sample.append(row_id)
    return TableCheck(name, s_rows, t_rows, s_hash.hexdigest(), t_hash.hexdigest(),
                      differing, tuple(sample), collisions=tuple(sorted(clashing)),
                      notes=tuple(paired.notes))
