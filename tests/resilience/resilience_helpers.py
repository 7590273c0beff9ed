"""A real stack for the resilience tests: up from a copy of the plan, services flipped, instances restarted.

Not a test module: ``test_restart_and_503.py`` and ``test_kill9.py`` import it
(pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from strangler.plan import Plan, load_plan
from strangler.stack.down import stand_down
from strangler.stack.lifecycle import _resolve_argv, backend_launches, procs

REPO = Path(__file__).resolve().parents[2]
STRANGLER = str(Path(sys.executable).parent / "strangler")
FLIPPED = ("users", "tokens", "messages")


def strangler(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in its own process, as a user would (*env*: added to the environment)."""
    return subprocess.run([STRANGLER, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env} if env else None)


def plan_copy(directory: Path, instances: dict[str, int] | None = None) -> Path:
    """The repository's plan in ``directory``: every [stack] port 0, ``instances`` per backend."""
    text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", (REPO / "strangler.toml").read_text(), flags=re.M)
    for name, count in (instances or {}).items():
        header = f"[backends.{name}]\n"
        assert header in text, f"the plan has no {header.strip()}"
        text = text.replace(header, f"{header}instances = {count}\n")
    path = directory / "strangler.toml"
    path.write_text(text)
    return path


@dataclass
class RunningStack:
    """What a started stack tells a test: its plan, run dir and ``state.json``."""

    plan_path: Path
    run_dir: Path
    state: dict

    @property
    def web(self) -> str:
        """Traefik's web entrypoint (the app's URL)."""
        return self.state["web"]

    @property
    def plan(self) -> Plan:
        """The plan as the stack sees it (``{run_dir}`` is the stack's run dir)."""
        return replace(load_plan(self.plan_path), run_dir=self.run_dir)

    def record(self, name: str) -> procs.PidRecord:
        """The pid record of process ``name`` (``users.0``, ``traefik``...)."""
        return procs.read_pidfiles(self.run_dir)[name]

    def instance_url(self, name: str) -> str:
        """Where instance ``name`` (``users.1``) serves, from ``state.json``."""
        backend = name.split(".")[0]
        (url,) = [i["url"] for i in self.state["backends"][backend]["instances"] if i["name"] == name]
        return url

    def flip(self, *services: str) -> None:
        """``strangler flip --service S --to S`` for each service; returns once Traefik has it live."""
        for service in services:
            result = strangler("flip", "--service", service, "--to", service, "--plan", str(self.plan_path),
                               "--etcd", self.state["etcd"], "--traefik-api", self.state["traefik_api"])
            assert result.returncode == 0, result.stdout + result.stderr

    def restart(self, name: str) -> procs.Proc:
        """Start instance ``name`` again with the command, port and environment ``strangler up`` gave it.

        Its pid file is rewritten, so ``strangler down`` stops the new process.
        """
        ports = {backend: [int(i["url"].rsplit(":", 1)[1]) for i in data["instances"]]
                 for backend, data in self.state["backends"].items()}
        secrets = json.loads((self.run_dir / "secrets.json").read_text())
        launches = backend_launches(self.plan, ports, etcd_url=self.state["etcd"],
                                    redis_url=self.state["redis"], secrets=secrets, lb_url=self.web)
        (launch,) = [launch for launch in launches if launch.name == name]
        proc = procs.Proc(name, _resolve_argv(launch.argv), launch.log_path, env=launch.env,
                          cwd=launch.cwd, url=launch.url).start()
        procs.write_pidfile(self.run_dir, name, proc)
        return proc


@contextmanager
def running_stack(directory: Path, instances: dict[str, int] | None = None,
                  flip: tuple[str, ...] = FLIPPED, env: dict[str, str] | None = None) -> Iterator[RunningStack]:
    """``strangler up --detach`` of a plan copy in ``directory``, ``flip`` services flipped; down after.

    *env*: settings every process of the stack inherits (e.g. ``STRANGLER_REGISTRY_TTL``)."""
    plan_path = plan_copy(directory, instances)
    run_dir = directory / "run"
    result = strangler("up", "--detach", "--plan", str(plan_path), "--run-dir", str(run_dir), env=env)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        # These tests make instances stay dead (kill -9, a stop) to see what the rest does
        # meanwhile; the supervisor would restart them, so it stands down (as for `down`).
        supervisor = procs.read_pidfiles(run_dir)["supervisor"]
        assert stand_down(supervisor) == "terminated"
        procs.remove_pidfile(run_dir, "supervisor")
        stack = RunningStack(plan_path, run_dir, json.loads((run_dir / "state.json").read_text()))
        stack.flip(*flip)
        yield stack
    finally:
        strangler("down", "--run-dir", str(run_dir))
        for record in procs.read_pidfiles(run_dir).values():  # only if down itself failed
            record.stop()


def register(web: str, session: requests.Session | None = None) -> tuple[str, str, int]:
    """A new user through Traefik: ``(nickname, password, id)``."""
    nickname, password = f"r{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    created = (session or requests).post(f"{web}/api/users", json={"nickname": nickname, "password": password},
                                         timeout=10)
    assert created.status_code == 201, created.text
    return nickname, password, created.json()["id"]


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.05) -> float | None:
    """Seconds until ``check()`` held, or None if it did not within ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if check():
            return time.monotonic() - began
        time.sleep(step)
    return None
