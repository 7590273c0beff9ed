"""The comparator's results in SQLite (``<run_dir>/shadow.sqlite``), bounded in size.

The comparator's threads count into memory (cheap, under one lock) and a
flusher writes the counts in one transaction now and then, so answering
Traefik never waits for the disk. Per endpoint the file keeps counters,
learned noise, every differing field pattern with its count (at most
``max_patterns`` per endpoint; the rest count under ``(other patterns)``)
and at most ``examples_per_pattern`` example request/answer pairs per
pattern, each body cut to ``body_limit`` bytes. ``read_report`` is what
``strangler diffs`` prints.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datalink.files import private_file
from strangler.shadow.redact import redact_example, redact_text

# dropped: the queue was full (the comparator cannot keep up); sampled_out: left out on
# purpose, beyond the configured share (STRANGLER_SHADOW_SAMPLE).
COUNTERS = ("seen", "compared", "differing", "dropped", "sampled_out", "skipped", "errors")
OTHER = "(other patterns)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint TEXT PRIMARY KEY, target TEXT, updated REAL,
    seen INTEGER DEFAULT 0, compared INTEGER DEFAULT 0, differing INTEGER DEFAULT 0,
    dropped INTEGER DEFAULT 0, sampled_out INTEGER DEFAULT 0, skipped INTEGER DEFAULT 0,
    errors INTEGER DEFAULT 0,
    last_error TEXT);
CREATE TABLE IF NOT EXISTS patterns (
    endpoint TEXT, pattern TEXT, kind TEXT, count INTEGER DEFAULT 0,
    PRIMARY KEY (endpoint, pattern));
CREATE TABLE IF NOT EXISTS noise_rates (
    endpoint TEXT, pattern TEXT, rate REAL, noisy INTEGER, PRIMARY KEY (endpoint, pattern));
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT, endpoint TEXT, pattern TEXT, time REAL, data TEXT);
"""


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=10, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")  # `strangler diffs` reads while the comparator writes
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _add_missing_counters(db: sqlite3.Connection) -> None:
    # A file written before a counter existed gets its column (0 so far).
    have = {row[1] for row in db.execute("PRAGMA table_info(endpoints)")}
    for name in COUNTERS:
        if name not in have:
            db.execute(f"ALTER TABLE endpoints ADD COLUMN {name} INTEGER DEFAULT 0")


class ShadowStore:
    """Counts in memory, written to SQLite by ``flush()``; any thread may call any method."""

    def __init__(self, path: Path | str, *, examples_per_pattern: int = 3,
                 max_patterns: int = 50, body_limit: int = 4096) -> None:
        # request bodies and answers are kept here: the owner's only
        self.path = private_file(path)
        self.examples_per_pattern = examples_per_pattern
        self.max_patterns = max_patterns
        self.body_limit = body_limit
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._reset()
        with _connect(self.path) as db:
            db.executescript(SCHEMA)
            _add_missing_counters(db)
        self._known_patterns: dict[str, set[str]] = defaultdict(set)
        self._example_counts: Counter[tuple[str, str]] = Counter()
        self._load_bounds()

    def _reset(self) -> None:
        self._counts: dict[str, Counter[str]] = defaultdict(Counter)
        self._targets: dict[str, str] = {}
        self._errors: dict[str, str] = {}
        self._patterns: Counter[tuple[str, str, str]] = Counter()
        self._noise: dict[str, dict[str, tuple[float, bool]]] = {}
        self._examples: list[tuple[str, str, float, str]] = []

    def _load_bounds(self) -> None:
        db = _connect(self.path)
        try:
            for endpoint, pattern in db.execute("SELECT endpoint, pattern FROM patterns"):
                self._known_patterns[endpoint].add(pattern)
            for endpoint, pattern, n in db.execute(
                    "SELECT endpoint, pattern, count(*) FROM examples GROUP BY endpoint, pattern"):
                self._example_counts[(endpoint, pattern)] = n
        finally:
            db.close()

    # -- counting (memory only) -------------------------------------------------------------

    def count(self, endpoint: str, what: str, n: int = 1, target: str | None = None) -> None:
        """Add ``n`` to counter ``what`` (one of COUNTERS) of ``endpoint``."""
        with self._lock:
            self._counts[endpoint][what] += n
            if target:
                self._targets[endpoint] = target

    def error(self, endpoint: str, message: str) -> None:
        """Count a failed comparison (a backend unreachable, say) and keep its message."""
        with self._lock:
            self._counts[endpoint]["errors"] += 1
            self._errors[endpoint] = message[:300]

    def noise_rates(self, endpoint: str, rates: Mapping[str, float], noisy: Iterable[str] = ()) -> None:
        """The endpoint's recent self-disagreement rate per field, and which are noise for it now."""
        noisy = set(noisy)
        with self._lock:
            self._noise[endpoint] = {p: (rate, p in noisy) for p, rate in rates.items()}

    def comparison(self, endpoint: str, target: str, differences: list, example: dict[str, Any]) -> None:
        """Count one finished comparison; with differences, count their patterns and keep examples."""
        with self._lock:
            counts = self._counts[endpoint]
            counts["compared"] += 1
            self._targets[endpoint] = target
            if not differences:
                return
            counts["differing"] += 1
            known = self._known_patterns[endpoint]
            for pattern, kind in dict.fromkeys((d.pattern, d.kind) for d in differences):
                if pattern not in known and len(known) >= self.max_patterns:
                    pattern = OTHER
                known.add(pattern)
                self._patterns[(endpoint, pattern, kind)] += 1
                if self._example_counts[(endpoint, pattern)] < self.examples_per_pattern:
                    self._example_counts[(endpoint, pattern)] += 1
                    data = json.dumps({**example, "pattern": pattern}, default=str)
                    self._examples.append((endpoint, pattern, time.time(), data))

    # -- writing -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what was counted since the last flush, in one transaction."""
        with self._flush_lock:
            with self._lock:
                counts, targets, errors = self._counts, self._targets, self._errors
                patterns, noise, examples = self._patterns, self._noise, self._examples
                self._reset()
            if not (counts or patterns or noise or examples):
                return
            db = _connect(self.path)
            try:
                db.execute("BEGIN")
                now = time.time()
                for endpoint, c in counts.items():
                    db.execute("INSERT OR IGNORE INTO endpoints (endpoint) VALUES (?)", (endpoint,))
                    sets = ", ".join(f"{name} = {name} + ?" for name in COUNTERS)
                    db.execute(f"UPDATE endpoints SET {sets}, updated = ?, "  # noqa: S608 - fixed names
                               "target = coalesce(?, target), last_error = coalesce(?, last_error) "
                               "WHERE endpoint = ?",
                               [*(c[name] for name in COUNTERS), now, targets.get(endpoint),
                                errors.get(endpoint), endpoint])
                for (endpoint, pattern, kind), n in patterns.items():
                    db.execute("INSERT INTO patterns (endpoint, pattern, kind, count) VALUES (?, ?, ?, ?) "
                               "ON CONFLICT (endpoint, pattern) DO UPDATE SET count = count + excluded.count",
                               (endpoint, pattern, kind, n))
                for endpoint, rates in noise.items():  # the window as it is now, not a history
                    db.execute("DELETE FROM noise_rates WHERE endpoint = ?", (endpoint,))
                    db.executemany("INSERT INTO noise_rates VALUES (?, ?, ?, ?)",
                                   [(endpoint, p, round(r, 4), int(n)) for p, (r, n) in sorted(rates.items())])
                db.executemany("INSERT INTO examples (endpoint, pattern, time, data) VALUES (?, ?, ?, ?)",
                               examples)
                db.execute("COMMIT")
            finally:
                db.close()

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Counters not yet flushed, per endpoint (for the comparator's stats view)."""
        with self._lock:
            return {e: dict(c) for e, c in self._counts.items()}


def read_report(path: Path | str, endpoint: str | None = None, *, top: int = 10,
                examples: int = 3) -> list[dict[str, Any]]:
    """The stored report, one dict per endpoint (only ``endpoint`` if given), busiest first.

    Each has the counters, ``diff_rate`` (differing / compared, None before
    the first comparison), ``noise`` (the fields noisy for the endpoint now),
    ``noise_rates`` (every field the monolith recently disagreed with itself
    on, with the share of comparisons), ``patterns`` (top
    ``top`` as ``{pattern, kind, count}``) and ``examples``. [] when the
    file does not exist yet.
    """
    path = Path(path)
    if not path.exists():
        return []
    db = _connect(path)
    try:
        db.row_factory = sqlite3.Row
        where, args = ("WHERE endpoint = ?", [endpoint]) if endpoint else ("", [])
        rows = db.execute(f"SELECT * FROM endpoints {where} ORDER BY seen DESC, endpoint", args).fetchall()  # noqa: S608
        report = []
        for row in rows:
            name = row["endpoint"]
            entry: dict[str, Any] = {k: row[k] for k in ("endpoint", "target", *COUNTERS, "last_error")}
            if entry["last_error"]:
                entry["last_error"] = redact_text(entry["last_error"])
            entry["diff_rate"] = round(row["differing"] / row["compared"], 4) if row["compared"] else None
            rates = db.execute("SELECT pattern, rate, noisy FROM noise_rates WHERE endpoint = ? "
                               "ORDER BY rate DESC, pattern", (name,)).fetchall()
            entry["noise"] = [r[0] for r in rates if r[2]]
            entry["noise_rates"] = {r[0]: r[1] for r in rates}
            entry["patterns"] = [dict(r) for r in db.execute(
                "SELECT pattern, kind, count FROM patterns WHERE endpoint = ? ORDER BY count DESC, pattern "
                "LIMIT ?", (name, top))]
            # redacted again on the way out: files written before redaction existed
            entry["examples"] = [redact_example(json.loads(r[0])) for r in db.execute(
                "SELECT data FROM examples WHERE endpoint = ? ORDER BY id LIMIT ?", (name, examples))]
            report.append(entry)
        return report
    finally:
        db.close()


def live_report(store: ShadowStore, endpoint: str | None = None, *, top: int = 10,
                examples: int = 3) -> list[dict[str, Any]]:
    """``read_report`` of the store's file plus the counts not flushed yet (the comparator's view).

    The counters, ``diff_rate`` and the order (busiest first) take in what the
    comparator counted since its last flush; an endpoint seen only since then
    gets an entry with no patterns or examples yet.
    """
    entries = {e["endpoint"]: e for e in read_report(store.path, endpoint, top=top, examples=examples)}
    for name, pending in store.snapshot().items():
        if endpoint and name != endpoint:
            continue
        entry = entries.setdefault(name, {
            "endpoint": name, "target": None, **dict.fromkeys(COUNTERS, 0), "last_error": None,
            "diff_rate": None, "noise": [], "noise_rates": {}, "patterns": [], "examples": []})
        for counter, n in pending.items():
            entry[counter] = (entry.get(counter) or 0) + n
        if entry["compared"]:
            entry["diff_rate"] = round(entry["differing"] / entry["compared"], 4)
    return sorted(entries.values(), key=lambda e: (-(e["seen"] or 0), e["endpoint"]))
