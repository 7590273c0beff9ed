"""Benchmark ``strangler migrate copy`` and ``sync``: bulk copy vs a naive ORM loop, and sync lag.

    .venv/bin/python bench/migrate_copy.py                 # 1,000,000 messages
    .venv/bin/python bench/migrate_copy.py --rows 200000 --baseline-rows 10000

1. Fills a monolith SQLite database (alembic schema) with 10 users and
   ``--rows`` messages (bulk executemany).
2. Copies them with the real copy engine (``plan_copy`` + ``run_copy``, what
   ``strangler migrate copy`` runs) to a fresh SQLite database and to a
   fresh PostgreSQL database (created on 127.0.0.1:5432, dropped at the end);
   checks each with ``verify_table``.
3. Measures a naive baseline in the same run on ``--baseline-rows`` rows:
   SQLAlchemy ORM objects read one by one, one ``session.add`` + ``flush``
   (one INSERT) per row, committed every 1,000 rows; extrapolates its rate.
4. Runs ``Syncer.follow`` (interval ``--interval``) while a writer inserts
   and updates ``--write-rate`` rows/s in the monolith's database for
   ``--duration`` seconds; prints lag p50/max, both measured end to end
   (write → row visible in the service's database) and as ``SyncResult.lag``.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import BigInteger, Integer, Text, create_engine, insert, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from datalink.tables import open_engine
from monolith import models
from monolith.db import upgrade_database
from strangler.migrate.copy import plan_copy, run_copy
from strangler.migrate.sync import Syncer, SyncState
from strangler.migrate.verify import verify_table

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
TARGETS = {"sqlite": 100_000, "postgresql": 50_000}
RATIO_TARGET = 20


class Base(DeclarativeBase):
    """The naive script's own mapping of the messages table."""


class Message(Base):
    """One message, as a naive copy script would map it."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    user_id: Mapped[int] = mapped_column(Integer)


def fill(url: str, rows: int) -> None:
    """10 users and *rows* messages, inserted in bulk."""
    engine = create_engine(url)
    now = int(time.time()) - rows  # old enough that sync's watermark starts after them
    with engine.begin() as connection:
        connection.execute(insert(models.User.__table__), [
            {"id": n, "created_at": now, "updated_at": now, "nickname": f"user{n}",
             "password_hash": "x", "last_seen_at": now, "online": False} for n in range(1, 11)])
    for start in range(1, rows + 1, 50_000):
        batch = [(n, now + n, now + n, f"message {n}: *hello* world", f"<p>message {n}: <em>hello</em> world</p>",
                  n % 10 + 1) for n in range(start, min(start + 50_000, rows + 1))]
        with engine.begin() as connection:
            connection.connection.cursor().executemany(
                "INSERT INTO messages (id, created_at, updated_at, source, html, user_id) "
                "VALUES (?, ?, ?, ?, ?, ?)", batch)
    engine.dispose()


def bulk_copy(source_url: str, target_url: str) -> float:
    """Copy messages with the real engine; verify; return rows/s."""
    source, target = open_engine(source_url, "monolith"), open_engine(target_url, "messages")
    try:
        result = run_copy(source, target, plan_copy(source, target, ["messages"]))
        check = verify_table(source, target, "messages")
        assert check.ok, check
        print(f"  bulk copy: {result.rows:,} rows in {result.seconds:.1f} s = {result.rate:,.0f} rows/s "
              f"(verify ok, {check.source_rows:,} rows)")
        return result.rate
    finally:
        source.dispose()
        target.dispose()


def naive_copy(source_url: str, target_url: str, rows: int) -> float:
    """The ORM row-by-row baseline on the first *rows* rows; return rows/s."""
    source, target = create_engine(source_url), create_engine(target_url)
    started = time.perf_counter()
    with Session(source) as reading, Session(target) as writing:
        query = select(Message).order_by(Message.id).limit(rows).execution_options(yield_per=1000)
        for n, message in enumerate(reading.scalars(query), 1):
            writing.add(Message(id=message.id, created_at=message.created_at, updated_at=message.updated_at,
                                source=message.source, html=message.html, user_id=message.user_id))
            writing.flush()
            if n % 1000 == 0:
                writing.commit()
        writing.commit()
    seconds = time.perf_counter() - started
    source.dispose()
    target.dispose()
    print(f"  naive ORM: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s "
          f"(extrapolated to 1,000,000 rows: {1_000_000 / (rows / seconds) / 60:.1f} min)")
    return rows / seconds


@contextlib.contextmanager
def target_database(engine: str, tmp: Path, label: str) -> Iterator[str | None]:
    """A fresh messages database (schema upgraded) on *engine*; a PostgreSQL one is dropped after.

    Yields None when there is no PostgreSQL server.
    """
    if engine == "sqlite":
        url = f"sqlite:///{tmp / f'{label}.sqlite'}"
        upgrade_database(url, tmp / f"{label}.lock", name="messages")
        yield url
        return
    name = f"strangler_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError as exc:  # a bench without PostgreSQL still measures SQLite
        print(f"  (no PostgreSQL at {PG_ADMIN}: {exc.orig}; skipped)")
        admin.dispose()
        yield None
        return
    try:
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        upgrade_database(url, tmp / f"{label}.lock", name="messages")
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def verdict(value: float, target: float) -> str:
    return f"{'OK' if value >= target else 'BELOW TARGET'} (target >= {target:,.0f})"


def sync_lag(source_url: str, target_url: str, rate: int, duration: float, interval: float) -> None:
    """Follow-sync while a writer changes *rate* rows/s; print the lag."""
    state = SyncState()
    state.start_at("messages", int(time.time()) - 2)
    written: dict[str, tuple[float, int]] = {}  # marker -> (when, id)
    landed: list[float] = []
    stop = threading.Event()
    source_engine = create_engine(source_url, connect_args={"timeout": 30})

    def writer() -> None:
        table = models.Message.__table__
        ids: list[int] = []
        end = time.monotonic() + duration
        tick = 0.05
        while time.monotonic() < end:
            started = time.monotonic()
            with source_engine.begin() as connection:
                for _ in range(max(1, int(rate * tick))):
                    marker, now = uuid.uuid4().hex, time.time()
                    if ids and random.random() < 0.5:  # an edit of a recent row
                        row_id = random.choice(ids[-500:])
                        connection.execute(update(table).where(table.c.id == row_id).values(
                            source=marker, updated_at=int(now)))
                    else:
                        row_id = connection.execute(insert(table).values(
                            created_at=int(now), updated_at=int(now), source=marker, html="<p>x</p>",
                            user_id=1)).inserted_primary_key[0]
                        ids.append(row_id)
                    written[marker] = (now, row_id)
            time.sleep(max(0.0, tick - (time.monotonic() - started)))
        time.sleep(2 * interval + 1)
        stop.set()

    target_engine = create_engine(target_url)
    reported: list[float] = []

    def on_pass(result) -> None:  # noqa: ANN001
        reported.append(result.lag)
        pending = dict(written)
        with target_engine.connect() as connection:
            found = connection.execute(select(models.Message.__table__.c.source).where(
                models.Message.__table__.c.source.in_(list(pending)))).scalars().all()
        now = time.time()
        for marker in found:
            when, _ = written.pop(marker, (None, None))
            if when is not None:
                landed.append(now - when)

    thread = threading.Thread(target=writer)
    with Syncer(source_url, target_url, ["messages"], state) as syncer:
        thread.start()
        passes = syncer.follow(interval, stop=stop, on_pass=on_pass)
    thread.join()
    source_engine.dispose()
    target_engine.dispose()
    lost = len(written)  # markers overwritten by a later edit of the same row never land: not lost
    landed.sort()
    print(f"  writer: ~{rate} changes/s for {duration:.0f} s (half inserts, half edits); "
          f"{passes} passes every {interval} s")
    print(f"  end-to-end lag: p50 {statistics.median(landed):.2f} s, max {landed[-1]:.2f} s "
          f"over {len(landed):,} changes ({lost} superseded by a later edit before a pass)")
    busy = sorted(r for r in reported if r > 0)
    if busy:
        print(f"  SyncResult.lag (whole seconds of updated_at): p50 {statistics.median(busy):.2f} s, "
              f"max {busy[-1]:.2f} s")


def main() -> None:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--write-rate", type=int, default=200)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as tmp:
        source = f"sqlite:///{Path(tmp) / 'monolith.sqlite'}"
        upgrade_database(source)
        started = time.perf_counter()
        fill(source, args.rows)
        print(f"filled the monolith with {args.rows:,} messages in {time.perf_counter() - started:.1f} s")
        for engine in ("sqlite", "postgresql"):
            print(f"SQLite -> {engine}:")
            with target_database(engine, Path(tmp), "bulk") as url:
                if url is None:
                    continue
                bulk = bulk_copy(source, url)
                if engine == "sqlite":
                    print("sync --follow under a steady write load (SQLite -> SQLite), after the copy:")
                    sync_lag(source, url, args.write_rate, args.duration, args.interval)
            with target_database(engine, Path(tmp), "naive") as url:
                naive = naive_copy(source, url, args.baseline_rows)
            print(f"  {engine}: {bulk:,.0f} rows/s: {verdict(bulk, TARGETS[engine])}; "
                  f"{bulk / naive:.0f}x the baseline: {verdict(bulk / naive, RATIO_TARGET)}")


if __name__ == "__main__":
    main()
