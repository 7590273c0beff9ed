"""strangler.stack.logs: durations, timestamps in every shape the stack writes, merging and filtering."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from strangler.stack.logs import log_files, merge, parse_since, read_lines, timestamp

NOON_UTC = datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC).timestamp()


def test_durations() -> None:
    assert [parse_since(t) for t in ("30s", "5m", "2h", "1d", "90", "1.5m")] == [30, 300, 7200, 86400, 90, 90]
    for bad in ("", "5x", "-5m", "0s", "m"):
        with pytest.raises(ValueError, match="like 30s, 5m"):
            parse_since(bad)


def test_timestamps_of_each_process() -> None:
    assert timestamp('{"level":"warn","ts":"2026-11-30T12:00:05.000Z","msg":"etcd"}') == NOON_UTC
    assert timestamp("2026-11-30T12:00:05Z INF Traefik version 3.7") == NOON_UTC
    assert timestamp("[2026-11-30 13:00:05 +0100] [42] [INFO] Booting worker") == NOON_UTC  # gunicorn
    local = datetime(2026, 11, 30, 12, 0, 5).timestamp()
    assert timestamp("19907:C 30 Nov 2026 12:00:05.367 # Redis is starting") == local
    assert timestamp("WARNING: 2026/11/30 12:00:05 [core] grpc") == local
    today = datetime(2026, 11, 30, 23, 0, 0)
    assert timestamp("12:00:05 users: synced 3 row(s)", today) == local  # the followers' clock
    assert timestamp("Traceback (most recent call last):") is None


def test_a_line_without_a_time_takes_the_previous_ones() -> None:
    lines = read_lines("monolith.0", ["[2026-11-30 12:00:05 +0000] [1] [ERROR] boom\n", "Traceback ...\n"])
    assert [(line.time, line.text) for line in lines] == [(NOON_UTC, lines[0].text), (NOON_UTC, "Traceback ...")]


def test_merge_orders_by_time_and_filters(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "traefik.log").write_text("2026-11-30T12:00:07Z INF b\n2026-11-30T12:00:09Z INF d\n")
    (logs / "users.0.log").write_text("[2026-11-30 12:00:08 +0000] [1] [INFO] c\nmore c\n")
    (logs / "users.1.log").write_text("[2026-11-30 12:00:06 +0000] [1] [INFO] a\n")
    (logs / "traefik-access.log").write_text('{"StartUTC": "2026-11-30T12:00:06Z"}\n')
    files = log_files(tmp_path)
    assert list(files) == ["traefik", "users.0", "users.1"]  # the access log only by name
    assert list(log_files(tmp_path, "users")) == ["users.0", "users.1"]
    assert list(log_files(tmp_path, "traefik-access")) == ["traefik-access"]
    merged = merge(files)
    assert [(line.process, line.text[-1]) for line in merged] == [
        ("users.1", "a"), ("traefik", "b"), ("users.0", "c"), ("users.0", "c"), ("traefik", "d")]
    assert merged[3].text == "more c"
    assert [line.text for line in merge(files, since=NOON_UTC + 3.5)] == ["2026-11-30T12:00:09Z INF d"]
