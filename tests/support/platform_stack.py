"""A real platform: ``strangler up --detach`` of a copy of the repository's plan, on free ports.

The stack (etcd, Redis, Traefik, the monolith and every service the plan
starts) runs in a temporary run dir, and the routing commands (flip,
rollback, cutover, routes) run against it exactly as a user types them.
Optionally on other databases than the plan's SQLite files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from strangler.cli import cli
from strangler.stack import procs

REPO = Path(__file__).resolve().parents[2]
STRANGLER = str(Path(sys.executable).parent / "strangler")
SERVICES = ["users", "tokens", "messages", "socketio", "ui"]


@dataclass
class Platform:
    """A running stack: its plans (incremental and big-bang copies), run dir and state.json."""

    plan: Path
    big_bang_plan: Path
    run_dir: Path
    state: dict[str, Any]
    databases: Mapping[str, str] | None = None
    env: Mapping[str, str] | None = None

    @property
    def web(self) -> str:
        """Traefik's web URL: the app."""
        return self.state["web"]

    @property
    def internal(self) -> str:
        """Traefik's internal entrypoint: where services call each other (and /internal/ is routed)."""
        return self.state["internal"]

    def instance(self, backend: str) -> str:
        """The URL of *backend*'s (only) instance, to talk to it past Traefik."""
        return self.state["backends"][backend]["instances"][0]["url"]

    def strangler(self, *args: str, big_bang: bool = False, ok: bool = True) -> Any:
        """Run a routing command (``flip``, ``rollback``, ...) in-process against this stack."""
        plan = self.big_bang_plan if big_bang else self.plan
        result = CliRunner().invoke(cli, [*args, "--plan", str(plan), "--etcd", self.state["etcd"],
                                          "--traefik-api", self.state["traefik_api"]])
        if ok:
            assert result.exit_code == 0, f"strangler {' '.join(args)}: {result.output}"
        return result

    def routes(self) -> dict[str, dict]:
        """``strangler routes --json``, keyed by endpoint (``"GET /api/users"``)."""
        rows = json.loads(self.strangler("routes", "--json").stdout)
        return {row["endpoint"]: row for row in rows}

    def serving(self) -> dict[str, str]:
        """Which backend serves each endpoint now, from ``routes --json``."""
        return {endpoint: row["backend"] for endpoint, row in self.routes().items()}

    def owners(self) -> dict[str, str]:
        """Each endpoint's owner in the plan (the service it moves to; the monolith keeps /healthz)."""
        return {endpoint: row["owner"] for endpoint, row in self.routes().items()}

    def flip_every_service(self) -> None:
        """``strangler flip --service X --to X`` for every service, one change each."""
        for service in SERVICES:
            self.strangler("flip", "--service", service, "--to", service)

    def roll_back_to_the_monolith(self, limit: int = 12) -> int:
        """``strangler rollback`` until every endpoint the monolith had is back on it; how many it took."""
        for done in range(limit + 1):
            if self.serving() == self.initial():
                return done
            self.strangler("rollback")
        raise AssertionError(f"{limit} rollbacks did not bring every endpoint back: {self.serving()}")

    def initial(self) -> dict[str, str]:
        """Where every endpoint starts: the monolith, except what a service ``serves`` itself."""
        return {endpoint: owner if endpoint.split()[1].startswith("/internal/") else "monolith"
                for endpoint, owner in self.owners().items()}

    def restart(self) -> None:
        """``strangler down``, then ``up`` again on the same plan and run dir."""
        down(self.run_dir)
        self.state = up(self.plan.parent, self.databases, self.env).state

    def access_log(self) -> Path:
        """Traefik's JSON access log (one line per request, naming the service that answered)."""
        return self.run_dir / "logs" / "traefik-access.log"

    def answered_by(self, marker: str, timeout: float = 5.0) -> tuple[str, str]:
        """(Traefik service name, server URL) of the request whose path carried *marker*."""
        deadline = time.monotonic() + timeout
        while True:
            for line in reversed(self.access_log().read_text().splitlines()):
                if marker in line:
                    entry = json.loads(line)
                    return entry["ServiceName"].removesuffix("@etcd"), entry["ServiceURL"]
            assert time.monotonic() < deadline, f"no access log line for {marker}"
            time.sleep(0.05)


def free_ports_plan(path: Path, text: str) -> Path:
    """Write *text* (a plan) to *path* with every [stack] port 0 and run_dir ``run``."""
    text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", text, flags=re.M)
    text = re.sub(r'^run_dir = "[^"]*"', 'run_dir = "run"', text, flags=re.M)
    path.write_text(text)
    return path


def with_databases(text: str, databases: Mapping[str, str]) -> str:
    """*text* (a plan) with the ``database`` of each backend named in *databases* replaced."""
    for backend, url in databases.items():
        text, found = re.subn(rf'(\[backends\.{backend}\][^\[]*?^database = )"[^"]*"',
                              lambda m, url=url: f'{m.group(1)}"{url}"', text, count=1, flags=re.M | re.S)
        assert found, f"no database line for backend {backend}"
    return text


def up(base: Path, databases: Mapping[str, str] | None = None,
       env: Mapping[str, str] | None = None) -> Platform:
    """``strangler up --detach`` a copy of the repository's plan in *base*; the running Platform.

    *databases*: backend -> database URL, instead of the plan's SQLite files;
    *env*: settings every backend inherits (e.g. ``LINK_EXPANSION_ALLOW_PRIVATE``).
    """
    text = with_databases((REPO / "strangler.toml").read_text(), databases or {})
    plan = free_ports_plan(base / "strangler.toml", text)
    big_bang = free_ports_plan(base / "big-bang.toml",
                               re.sub(r'^strategy = "[^"]*"', 'strategy = "big-bang"', text, flags=re.M))
    run_dir = base / "run"
    result = subprocess.run([STRANGLER, "up", "--detach", "--plan", str(plan), "--run-dir", str(run_dir)],
                            capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        down(run_dir)
        pytest.fail(f"strangler up failed: {result.stdout}{result.stderr}")
    state = json.loads((run_dir / "state.json").read_text())
    return Platform(plan=plan, big_bang_plan=big_bang, run_dir=run_dir, state=state, databases=databases,
                    env=env)


def down(run_dir: Path) -> None:
    """``strangler down``, then stop by PID whatever it left running."""
    subprocess.run([STRANGLER, "down", "--run-dir", str(run_dir)], capture_output=True, timeout=120)
    for record in procs.read_pidfiles(run_dir).values():
        record.stop()


