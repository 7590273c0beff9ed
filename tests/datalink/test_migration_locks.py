"""The migration lock in the database itself, on PostgreSQL and MariaDB: processes take turns."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from databases import database
from sqlalchemy import create_engine, text

from datalink.locks import LockTimeout, advisory_lock, lock_name, postgres_key

pytestmark = pytest.mark.integration

WAITER = """
import sys
from datalink.locks import advisory_lock
with advisory_lock(sys.argv[1], "monolith", timeout=60):
    print("got it", flush=True)
"""


def waiting_for_the_lock(url: str, kind: str) -> bool:
    """True once the database shows a session blocked on our advisory lock."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if kind == "postgresql":  # this test's database only: other tests may share the server
                query = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                         "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
                return connection.execute(text(query)).scalar() > 0
            query = "SELECT count(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE :pattern"
            pattern = f"SELECT GET_LOCK('{lock_name(url, 'monolith')}'%"
            return connection.execute(text(query), {"pattern": pattern}).scalar() > 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_second_process_waits_for_the_first_and_then_migrates(kind, tmp_path):
    with database(kind, tmp_path, "lock") as url:
        with advisory_lock(url, "monolith"):
            waiter = subprocess.Popen([sys.executable, "-c", WAITER, url], stdout=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 30
                while not waiting_for_the_lock(url, kind):
                    assert waiter.poll() is None, "the second process did not wait"
                    assert time.monotonic() < deadline, "the second process never asked for the lock"
                    time.sleep(0.05)
                assert waiter.poll() is None  # still blocked while we hold it
            except BaseException:
                waiter.kill()
                raise
        out, _ = waiter.communicate(timeout=30)
        assert waiter.returncode == 0 and out == "got it\n"


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_other_environments_do_not_wait_and_a_long_wait_gives_up_in_one_line(kind, tmp_path):
    with database(kind, tmp_path, "lock") as url, advisory_lock(url, "monolith"):
        with advisory_lock(url, "users", timeout=5):
            pass  # another environment's lock: free
        with pytest.raises(LockTimeout, match="another migration held the database lock"), \
                advisory_lock(url, "monolith", timeout=1):
            pass


def test_lock_names_fit_mariadb_and_keys_fit_postgresql():
    short = lock_name("postgresql://h/db", "users")
    assert short == "strangler-migrate:db:users"
    long = lock_name("mysql+pymysql://h/" + "d" * 60, "/srv/app/migrations/books")
    assert len(long) <= 64 and long.startswith("strangler-migrate:")
    assert -(2**63) <= postgres_key(long) < 2**63
    assert postgres_key(short) == postgres_key("strangler-migrate:db:users")
