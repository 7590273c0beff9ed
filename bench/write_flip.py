"""Writes while the inserting endpoints flip: writes/s, failed, duplicated, lost, latency at the switch.

For each engine (SQLite always; PostgreSQL and MariaDB when their servers
answer on 127.0.0.1), starts a real stack with ``strangler up --detach``
(a copy of the repository's plan on free ports; the monolith's, users' and
messages' databases on that engine, fresh), then runs ``--writers`` writer
threads posting messages (and every sixth request registering a user)
through Traefik, each at ``--rate`` writes/s:

1. **baseline**: ``--seconds`` seconds with no flips;
2. **flipping**: the same load while ``strangler flip --service users``,
   ``flip --service messages`` and two ``strangler rollback`` repeat
   ``--cycles`` times (each change confirmed live through Traefik's API).

Then every write answered 201 is checked against both databases. Printed
per engine: writes/s in each phase and their ratio, failed requests, ids
handed out twice, acknowledged rows missing or changed (all three must be
0), and the p99 latency of writes sent within 100 ms after a switch against
the p99 of the baseline. Everything stays on 127.0.0.1 and every process
started is stopped by ``strangler down`` and then by PID.

    .venv/bin/python bench/write_flip.py
    .venv/bin/python bench/write_flip.py --engines sqlite --cycles 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from strangler.stack import procs  # noqa: E402

STRANGLER = str(Path(sys.executable).parent / "strangler")
# one client registering a user every sixth write: lift the per-client limits on
# registering and logging in (the stack's backends inherit this environment)
for _name in ("RATE_LIMIT_LOGIN", "RATE_LIMIT_REGISTER"):
    os.environ.setdefault(_name, "100000 per minute")
SERVERS = {"postgresql": "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
           "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test"}
SWITCH_WINDOW = 0.1  # seconds after a change in which a write counts as "at the switch"


def percentile(values: list[float], q: float) -> float:
    """The *q*-th percentile (0-100) of *values*, nearest rank; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


@contextmanager
def server_database(kind: str, name: str):
    """A fresh database on *kind*'s server (dropped afterwards), or None when no server answers."""
    if kind == "sqlite":
        yield None
        return
    admin = create_engine(SERVERS[kind], isolation_level="AUTOCOMMIT")
    db_name = f"strangler_bench_{name}_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {db_name}"))
    except OperationalError:
        admin.dispose()
        yield False
        return
    try:
        yield SERVERS[kind].rsplit("/", 1)[0] + f"/{db_name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {db_name}"
                                    + (" WITH (FORCE)" if kind == "postgresql" else "")))
        admin.dispose()


def plan_text(databases: dict[str, str]) -> str:
    """The repository's plan on free ports, run dir ``run``, with *databases* replacing its own."""
    body = (REPO / "strangler.toml").read_text()
    body = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", body, flags=re.M)
    body = re.sub(r'^run_dir = "[^"]*"', 'run_dir = "run"', body, flags=re.M)
    for backend, url in databases.items():
        body = re.sub(rf'(\[backends\.{backend}\][^\[]*?^database = )"[^"]*"',
                      lambda m, url=url: f'{m.group(1)}"{url}"', body, count=1, flags=re.M | re.S)
    return body


class Stack:
    """``strangler up --detach`` in *base*; ``close()`` runs ``down`` and stops leftovers by PID."""

    def __init__(self, base: Path, databases: dict[str, str]) -> None:
        self.plan = base / "strangler.toml"
        self.plan.write_text(plan_text(databases))
        self.run_dir = base / "run"
        done = subprocess.run([STRANGLER, "up", "--detach", "--plan", str(self.plan)],
                              capture_output=True, text=True, timeout=240)
        if done.returncode != 0:
            self.close()
            raise SystemExit(f"strangler up failed: {done.stdout}{done.stderr}")
        self.state = json.loads((self.run_dir / "state.json").read_text())

    def strangler(self, *args: str) -> None:
        """A routing command against this stack (exit 0 required)."""
        done = subprocess.run([STRANGLER, *args, "--plan", str(self.plan), "--etcd", self.state["etcd"],
                               "--traefik-api", self.state["traefik_api"]], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"strangler {' '.join(args)}: {done.stdout}{done.stderr}")

    def close(self) -> None:
        subprocess.run([STRANGLER, "down", "--run-dir", str(self.run_dir)], capture_output=True, timeout=120)
        for record in procs.read_pidfiles(self.run_dir).values():
            record.stop()


class Load:
    """Writer threads; every answer kept as (sent at, seconds, table, id or None, expected row)."""

    def __init__(self, web: str, writers: int, rate: float, tag: str) -> None:
        self.web, self.rate, self.tag = web, rate, tag
        self.answers: list[tuple[float, float, str, int | None, tuple]] = []
        self.failures: list[str] = []
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.writer, args=(n,)) for n in range(writers)]

    def writer(self, n: int) -> None:
        with requests.Session() as http:
            name = f"{self.tag}w{n}"
            my_id = http.post(f"{self.web}/api/users", json={"nickname": name, "password": "pw"},
                              timeout=15).json()["id"]
            token = http.post(f"{self.web}/api/tokens", auth=(name, "pw"), timeout=15).json()["token"]
            bearer = {"Authorization": f"Bearer {token}"}
            i = 0
            while not self.stop.is_set():
                i += 1
                if i % 6:
                    table, row, call = "messages", (f"{name}-{i}", my_id), lambda i=i: http.post(
                        f"{self.web}/api/messages", json={"source": f"{name}-{i}"}, headers=bearer, timeout=15)
                else:
                    table, row, call = "users", (f"{name}u{i}",), lambda i=i: http.post(
                        f"{self.web}/api/users", json={"nickname": f"{name}u{i}", "password": "pw"}, timeout=15)
                sent = time.monotonic()
                try:
                    answer = call()
                    made = answer.json()["id"] if answer.status_code == 201 else None
                    why = None if made else f"{table}: {answer.status_code} {answer.text[:100]}"
                except (requests.RequestException, ValueError) as exc:
                    made, why = None, f"{table}: {type(exc).__name__}"
                with self.lock:
                    self.answers.append((sent, time.monotonic() - sent, table, made, row))
                    if why:
                        self.failures.append(why)
                self.stop.wait(max(0.0, 1.0 / self.rate - (time.monotonic() - sent)))

    def run(self, action) -> None:  # noqa: ANN001
        """Run the writers while *action* runs."""
        for thread in self.threads:
            thread.start()
        try:
            action()
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join(30)


def rate(answers: list) -> float:
    """Writes per second between the first write sent and the last one answered."""
    if len(answers) < 2:
        return 0.0
    first = min(a[0] for a in answers)
    last = max(a[0] + a[1] for a in answers)
    return len(answers) / (last - first)


def check(stack: Stack, answers: list) -> tuple[int, int, int]:
    """(failed, ids handed out twice, acknowledged rows missing or changed in either database)."""
    from strangler.plan import load_plan

    plan = load_plan(stack.plan)
    failed = sum(1 for a in answers if a[3] is None)
    duplicated = lost = 0
    queries = {"messages": "SELECT id, source, user_id FROM messages", "users": "SELECT id, nickname FROM users"}
    owners = {"messages": "messages", "users": "users"}
    for table, sql in queries.items():
        made = [(a[3], a[4]) for a in answers if a[2] == table and a[3] is not None]
        duplicated += len(made) - len({m[0] for m in made})
        for side in ("monolith", owners[table]):
            engine = create_engine(plan.database_url(side))
            with engine.connect() as connection:
                held = {row[0]: tuple(row[1:]) for row in connection.execute(text(sql))}
            engine.dispose()
            lost += sum(1 for made_id, row in made if held.get(made_id) != row)
    return failed, duplicated, lost


def bench_engine(kind: str, args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix=f"write-flip-{kind}-") as tmp, \
            server_database(kind, "mono") as mono, server_database(kind, "users") as users, \
            server_database(kind, "msgs") as msgs:
        if mono is False:
            return f"{kind:10} skipped: no server on 127.0.0.1"
        stack = Stack(Path(tmp), {"monolith": mono, "users": users, "messages": msgs} if mono else {})
        try:
            base = Load(stack.state["web"], args.writers, args.rate, "b")
            base.run(lambda: time.sleep(args.seconds))
            switches: list[float] = []

            def flips() -> None:
                for cycle in range(args.cycles):
                    for service in (("users", "messages") if cycle % 2 else ("messages", "users")):
                        stack.strangler("flip", "--service", service, "--to", service)
                        switches.append(time.monotonic())
                    for _ in range(2):
                        stack.strangler("rollback")
                        switches.append(time.monotonic())

            load = Load(stack.state["web"], args.writers, args.rate, "f")
            load.run(flips)
            time.sleep(3)  # the followers' settle time, before the rows are read back
            failed, duplicated, lost = check(stack, base.answers + load.answers)
        finally:
            stack.close()
    at_switch = [a[1] for a in load.answers if any(0 <= a[0] - s <= SWITCH_WINDOW for s in switches)]
    base_rate, flip_rate = rate(base.answers), rate(load.answers)
    base_p99 = percentile([a[1] for a in base.answers], 99) * 1000
    switch_p99 = percentile(at_switch, 99) * 1000
    why = "; ".join(sorted(set(base.failures + load.failures))[:3])
    return (f"{kind:10} writes/s {base_rate:6.1f} -> {flip_rate:6.1f} during {len(switches)} changes "
            f"(x{flip_rate / base_rate:.2f}); failed {failed}, duplicated {duplicated}, lost {lost}; "
            f"p99 {base_p99:.0f} ms, at the switch {switch_p99:.0f} ms (+{switch_p99 - base_p99:.0f} ms, "
            f"{len(at_switch)} writes)" + (f"\n{'':10} failures: {why}" if why else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,postgresql,mariadb")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=12.0, help="writes/s per writer")
    parser.add_argument("--seconds", type=float, default=10.0, help="baseline phase length")
    parser.add_argument("--cycles", type=int, default=26, help="flip users, flip messages, 2 rollbacks")
    args = parser.parse_args(argv)
    if not 1 <= args.writers <= 32 or not 0 < args.rate <= 100 or not 1 <= args.cycles <= 200 \
            or not 1 <= args.seconds <= 120:
        parser.error("--writers 1..32, --rate 0..100, --cycles 1..200, --seconds 1..120")
    print(f"{args.writers} writers x {args.rate:g} writes/s through Traefik; {args.cycles} cycles of "
          f"flip users + flip messages + 2 rollbacks")
    for kind in args.engines.split(","):
        print(bench_engine(kind.strip(), args), flush=True)


if __name__ == "__main__":
    main()
