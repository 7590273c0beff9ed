"""A real ``strangler migrate copy`` killed with SIGKILL midway, then run again: it completes and verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from migrate_helpers import ENGINES, databases, run, write_plan
from sqlalchemy import create_engine, func, insert, select

from monolith import models

pytestmark = pytest.mark.integration

MESSAGES = 200_000
CHUNK = 5000


def fill(url: str, count: int) -> None:
    """Bulk-insert a few users and *count* messages into the monolith's database."""
    users = models.User.__table__
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(users), [
                {"id": n, "created_at": 1, "updated_at": 1, "nickname": f"user{n}",
                 "password_hash": "x", "last_seen_at": 1, "online": n % 2 == 0} for n in range(1, 11)])
        columns = "id, created_at, updated_at, source, html, user_id"
        for start in range(1, count + 1, 20_000):
            batch = [(n, 1_700_000_000 + n, 1_700_000_000 + n, f"message {n} with *markdown*",
                      f"<p>message {n}</p>", n % 10 + 1) for n in range(start, min(start + 20_000, count + 1))]
            with engine.begin() as connection:  # the driver's own fast path, not the code under test
                cursor = connection.connection.cursor()
                if engine.dialect.name == "postgresql":
                    from psycopg2.extras import execute_values

                    execute_values(cursor, f"INSERT INTO messages ({columns}) VALUES %s", batch, page_size=5000)
                else:
                    mark = "?" if engine.dialect.name == "sqlite" else "%s"
                    cursor.executemany(f"INSERT INTO messages ({columns}) VALUES ({', '.join([mark] * 6)})", batch)
    finally:
        engine.dispose()


def count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(models.Message.__table__)).scalar()
    finally:
        engine.dispose()


@pytest.mark.parametrize("engine", ENGINES)
def test_copy_killed_midway_resumes_and_verifies(engine, tmp_path):
    with databases(tmp_path, engine, engine) as urls:
        path = write_plan(tmp_path, urls)
        assert run(path, "upgrade").exit_code == 0
        fill(urls["monolith"], MESSAGES)
        proc = subprocess.Popen(
            [sys.executable, "-c", "from strangler.cli import main; main()", "migrate", "copy", "messages",
             "--chunk", str(CHUNK), "--plan", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "80"})
        try:
            shown = 0
            deadline = time.monotonic() + 120
            for line in proc.stdout:  # "messages: 15,000 rows" once a chunk is committed
                if line.startswith("messages: "):
                    shown = int(line.split()[1].replace(",", ""))
                if shown >= 4 * CHUNK or time.monotonic() > deadline:
                    break
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        done = count(urls["messages"])
        assert shown <= done < MESSAGES, (shown, done)
        assert done % CHUNK == 0  # whole chunks only: the one in flight was rolled back

        again = run(path, "copy", "messages")
        assert again.exit_code == 0, again.output
        assert f"copied {MESSAGES - done:,} rows" in again.output
        assert count(urls["messages"]) == MESSAGES
        verified = run(path, "verify", "messages")
        assert verified.exit_code == 0, verified.output
        assert f"messages: ok, {MESSAGES:,} rows" in verified.output
