"""What one backend instance of the local stack is started with: argv, environment, log, port.

Pure (no processes here): :func:`backend_launches` turns the plan, the ports
and the stack's URLs into one :class:`Launch` per instance, which
``strangler.stack.lifecycle`` starts and the compose and resilience tests inspect.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from strangler.plan import Plan
from strangler.stack.data import write_through

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Launch:
    """One backend instance to start: ``name`` is ``<backend>.<instance>`` (its pid file and log)."""

    backend: str
    instance: int
    port: int
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: str
    health_path: str
    service: str = ""  # its Traefik service ("": the backend's own name; see STRANGLER_SERVICE)

    @property
    def traefik_service(self) -> str:
        """The Traefik service whose load balancer lists this instance."""
        return self.service or self.backend

    @property
    def name(self) -> str:
        """``<backend>.<instance>``, e.g. ``monolith.0``."""
        return f"{self.backend}.{self.instance}"

    @property
    def url(self) -> str:
        """Where the instance serves (what it registers for Traefik)."""
        return f"http://{HOST}:{self.port}"


def write_through_reports(run_dir: Path) -> Path:
    """Where write-through processes leave their figures: ``<backend>.<instance>/<pid>.json``."""
    return Path(run_dir) / "writethrough"


def backend_launches(
    plan: Plan,
    backend_ports: Mapping[str, list[int]],
    *,
    etcd_url: str,
    redis_url: str,
    secrets: Mapping[str, str],
    lb_url: str = "",
    linked: Sequence[str] = (),
    services: Mapping[str, str] | None = None,
) -> list[Launch]:
    """PURE: every instance of every started backend, with its argv and environment.

    ``plan.run_dir`` is the stack's run dir; ``backend_ports`` gives each started
    backend one port per instance. The plan's own ``env`` wins over what the
    stack sets, so a plan can, say, choose another profile. ``lb_url`` is
    Traefik's internal entrypoint: services call each other through it. ``linked`` names
    the services whose data is linked with the monolith's: those and the
    monolith get ``STRANGLER_WRITE_THROUGH`` (see strangler.stack.data).
    ``services`` maps a backend to the Traefik service its instances register
    under when that is not its own name (a finished blue/green's live set).
    """
    launches = []
    for name, backend in plan.backends.items():
        if not backend.start:
            continue
        for i, port in enumerate(backend_ports[name]):
            launches.append(instance_launch(plan, name, i, port, etcd_url=etcd_url, redis_url=redis_url,
                                            secrets=secrets, lb_url=lb_url, linked=linked,
                                            service=(services or {}).get(name)))
    return launches


def instance_launch(
    plan: Plan,
    name: str,
    i: int,
    port: int,
    *,
    etcd_url: str,
    redis_url: str,
    secrets: Mapping[str, str],
    lb_url: str = "",
    linked: Sequence[str] = (),
    release: str | None = None,
    env: Mapping[str, str] | None = None,
    service: str | None = None,
) -> Launch:
    """PURE but for the code fingerprint: instance ``i`` of backend ``name`` on ``port``.

    ``release`` names the instance's release (default: the label
    :func:`strangler.stack.release.release_label` computes); ``env`` adds to
    the plan's own ``env`` (an upgrade's ``--env``); ``service`` the Traefik
    service it registers under (default: ``name``; a blue/green's set).
    """
    from strangler.stack.release import release_label

    run_dir = plan.run_dir
    backend = plan.backends[name]
    peers = write_through(plan, linked)
    extra = dict(env or {})
    environ = {
        "STRANGLER_ETCD": etcd_url,
        "STRANGLER_BACKEND": name,
        "STRANGLER_SERVICE": service or name,
        "STRANGLER_INSTANCE_URL": f"http://{HOST}:{port}",
        "STRANGLER_HEALTH_PATH": backend.health,
        "STRANGLER_DATA_DIR": str(run_dir / "data"),
        "STRANGLER_ENV": "development",
        "SOCKETIO_MESSAGE_QUEUE": redis_url,
        "STRANGLER_LB_URL": lb_url,
        "PORT": str(port),
        # gunicorn names its processes with setproctitle; within argv's own room, so that
        # /proc/<pid>/environ still shows a (cold-started) instance's environment
        "SPT_NOENV": "1",
        **{key: secrets[key] for key in plan.secrets},
    }
    database = plan.database_url(name)
    if database:
        environ["DATABASE_URL"] = database
    if name in peers:
        environ["STRANGLER_WRITE_THROUGH"] = json.dumps(peers[name], sort_keys=True)
        # each process reports its figures there for strangler status
        environ["STRANGLER_WRITE_THROUGH_REPORT"] = str(write_through_reports(run_dir) / f"{name}.{i}")
    environ.update(backend.env)
    environ.update(extra)
    environ["STRANGLER_RELEASE"] = release or release_label(plan, name, extra)
    argv = shlex.split(plan.command(name, port=port, instance=i, host=HOST))
    return Launch(
        backend=name, instance=i, port=port, argv=argv, env=environ,
        log_path=run_dir / "logs" / f"{name}.{i}.log",
        cwd=str(plan.path.parent if plan.path else Path.cwd()),
        health_path=backend.health,
        service=service if service and service != name else "",
    )


def _resolve_argv(argv: list[str]) -> list[str]:
    """Find a bare program name (``gunicorn``) in this venv first, then on PATH."""
    if not argv or "/" in argv[0]:
        return argv
    beside = Path(sys.executable).parent / argv[0]
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside), *argv[1:]]
    return [shutil.which(argv[0]) or argv[0], *argv[1:]]
