"""The ``strangler`` command: one Click group, commands from the modules that own them."""

from __future__ import annotations

import click

from monolith.server import monolith_command
from strangler import __version__
from strangler.compare_cli import compare
from strangler.migrate.cli import migrate
from strangler.plan_cli import plan, scan
from strangler.routing_cli import cutover, flip, history, rollback, routes
from strangler.shadow_cli import diffs, shadow
from strangler.stack_cli import down, status, up


@click.group(context_settings={"auto_envvar_prefix": "STRANGLER", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="strangler")
def cli() -> None:
    """Move a monolith's endpoints to extracted services, one at a time, behind Traefik."""


cli.add_command(scan)
cli.add_command(plan)
cli.add_command(monolith_command)
cli.add_command(up)
cli.add_command(down)
cli.add_command(status)
cli.add_command(routes)
cli.add_command(flip)
cli.add_command(history)
cli.add_command(rollback)
cli.add_command(cutover)
cli.add_command(compare)
cli.add_command(shadow)
cli.add_command(diffs)
cli.add_command(migrate)


def main() -> None:
    """Console-script entry point."""
    cli(auto_envvar_prefix="STRANGLER")
