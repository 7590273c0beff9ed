"""``strangler console``: serve the console page for a running stack, in the foreground.

``strangler up`` starts the same command line (:func:`console_argv`) as one
of its processes; this command is for a console of one's own (another
port, another machine's stack with ``--etcd``/``--traefik-api``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from strangler.console import ConsoleConfigError, check_binding
from strangler.plan.cli import open_plan, plan_option

APP = "strangler.console.wsgi:app"


def console_argv(host: str, port: int) -> list[str]:
    """The gunicorn command line serving the console on ``host:port``."""
    beside = Path(sys.executable).parent / "gunicorn"
    program = str(beside) if beside.is_file() else shutil.which("gunicorn") or "gunicorn"
    return [program, "-c", "python:strangler.console.gunicorn_conf", "--bind", f"{host}:{port}", APP]


def console_env(*, run_dir: Path, plan: Path | None, etcd: str | None = None, traefik_api: str | None = None,
                host: str = "127.0.0.1") -> dict[str, str]:
    """The environment the console reads its sources from (added to the caller's)."""
    env = {"STRANGLER_RUN_DIR": str(run_dir), "STRANGLER_CONSOLE_HOST": host}
    for name, value in (("STRANGLER_PLAN", plan), ("STRANGLER_ETCD", etcd),
                        ("STRANGLER_TRAEFIK_API", traefik_api)):
        if value:
            env[name] = str(value)
    return env


@click.command()
@plan_option
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), envvar="STRANGLER_RUN_DIR",
              show_envvar=True, help="The stack's run dir [default: the plan's run_dir].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs STRANGLER_CONSOLE_PASSWORD.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port [default: [stack] console_port in the plan, 8082].")
@click.option("--etcd", "etcd_url", envvar="STRANGLER_ETCD", show_envvar=True,
              help="etcd's URL [default: the running stack's].")
@click.option("--traefik-api", "traefik_url", envvar="STRANGLER_TRAEFIK_API", show_envvar=True,
              help="Traefik's API URL [default: the running stack's].")
def console(plan_path: Path, run_dir: Path | None, host: str, port: int | None, etcd_url: str | None,
            traefik_url: str | None) -> None:
    """Serve the console: progress, routes, instances, diffs, data and history, live, with actions.

    Runs in the foreground until Ctrl-C. `strangler up` starts one already
    (its URL is printed as `console:`); this is for another one.
    """
    plan = open_plan(plan_path)
    try:
        check_binding(host, os.environ.get("STRANGLER_CONSOLE_PASSWORD"))
    except ConsoleConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--host") from None
    port = plan.stack.console_port if port is None else port
    env = console_env(run_dir=(run_dir or plan.run_dir).resolve(), plan=plan_path.resolve(),
                      etcd=etcd_url, traefik_api=traefik_url, host=host)
    argv = console_argv(host, port)
    click.echo(f"console: http://{host}:{port}/  (Ctrl-C stops it)")
    _exec(argv, env)


def _exec(argv: list[str], env: Mapping[str, str]) -> None:
    os.execve(argv[0], argv, {**os.environ, **env})
