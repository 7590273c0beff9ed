"""datalink.files: private directories and files, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datalink.files import open_private_append, private_dir, sqlite_file, write_private


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def loose_umask():
    old = os.umask(0o002)  # the loosest usual umask: group-writable files
    yield
    os.umask(old)


def test_missing_parents_are_made_0700_and_existing_ones_kept(tmp_path, loose_umask):
    tmp_path.chmod(0o755)
    made = private_dir(tmp_path / "a" / "b")
    assert (mode(tmp_path / "a"), mode(made), mode(tmp_path)) == (0o700, 0o700, 0o755)
    assert private_dir(made) == made  # twice is fine


def test_files_are_written_and_appended_0600(tmp_path, loose_umask):
    state = write_private(tmp_path / "run" / "state.json", "{}")
    write_private(state, '{"a": 1}')
    assert (state.read_text(), mode(state), mode(state.parent)) == ('{"a": 1}', 0o600, 0o700)
    assert [p.name for p in state.parent.iterdir()] == ["state.json"]  # no temporary file left
    with open_private_append(tmp_path / "logs" / "x.log") as log:
        log.write(b"line\n")
    assert mode(tmp_path / "logs" / "x.log") == 0o600


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:////srv/data/m.sqlite", "/srv/data/m.sqlite"),
    ("sqlite+pysqlite:///rel.db?timeout=5", "rel.db"),
    ("sqlite://", None),
    ("sqlite:///:memory:", None),
    ("postgresql://u@h/db", None),
])
def test_sqlite_file_of_a_url(url, path):
    assert sqlite_file(url) == (Path(path) if path else None)


def test_an_open_sqlite_database_keeps_its_locks(tmp_path):
    import sqlite3
    import subprocess
    import sys

    from datalink.files import private_file, private_sqlite_file

    path = tmp_path / "held.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # a write lock: a POSIX lock on the file
    try:
        private_file(path)
        private_sqlite_file(f"sqlite:///{path}")
        writer = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1], timeout=0); "
                  "db.execute('INSERT INTO t VALUES (1)'); db.commit()")
        other = subprocess.run([sys.executable, "-c", writer, str(path)], capture_output=True, text=True)
        assert other.returncode != 0 and "database is locked" in other.stderr
    finally:
        holder.rollback()
        holder.close()
