"""Starting and draining one backend instance under the supervisor (what scale, upgrades and
blue/green share)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from strangler.stack import procs
from strangler.stack.drain import drain
from strangler.stack.launch import Launch, instance_launch


def next_launch(stack: Any, backend: str, release: str | None = None,
                env: Mapping[str, str] | None = None, service: str | None = None) -> Launch:
    """A new instance of ``backend``: the lowest free index, a free port, registered under ``service``
    (its Traefik service: the live set's; default its own name)."""
    taken = {launch.instance for name, launch in stack.launches.items()
             if launch.backend == backend and name in stack.procs}
    index = next(i for i in range(len(taken) + 1) if i not in taken)
    return instance_launch(stack.plan, backend, index, procs.free_port(), release=release, env=env,
                           service=service, **stack.launch_args)


def start(stack: Any, supervisor: Any, launch: Launch) -> None:
    """Start ``launch`` and supervise it (it is ``starting`` until healthy and registered)."""
    with supervisor.lock:
        proc = stack.start_instance(launch)
        supervisor.watch(proc)
        stack.write_state()
    supervisor.echo(f"{launch.name} started (pid {proc.pid}) {launch.url} release {launch.env['STRANGLER_RELEASE']}")


def start_drain(stack: Any, supervisor: Any, name: str) -> threading.Thread:
    """Mark ``name`` draining and take it out in a thread (the supervisor keeps watching the rest)."""
    watched = supervisor.watched[name]
    watched.state = "draining"
    launch = stack.launches[name]

    def run() -> None:
        supervisor.echo(f"{name} draining")
        outcome = drain(stack.client, stack.api, launch.backend, launch.url, watched.proc.stop,
                        service=launch.traefik_service)
        with supervisor.lock:
            supervisor.forget(name)
            stack.forget_instance(name)
        supervisor.echo(f"{name} drained: {outcome}")

    thread = threading.Thread(target=run, name=f"drain-{name}", daemon=True)
    thread.start()
    return thread
