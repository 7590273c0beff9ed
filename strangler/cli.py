"""The ``strangler`` command: one Click group, commands from the modules that own them.

Commands are imported only when used: the monolith and the services pull in
Flask-SocketIO, SQLAlchemy and alembic, which cost ~0.8 s at start-up and
which routing commands such as ``flip`` never need.
"""

from __future__ import annotations

import importlib

import click

from strangler import __version__

# command name -> "module:attribute"; the module owns the command.
COMMANDS = {
    "up": "strangler.stack_cli:up",
    "down": "strangler.stack_cli:down",
    "status": "strangler.stack_cli:status",
    "monolith": "monolith.server:monolith_command",
    "scan": "strangler.plan_cli:scan",
    # routing_cli adds `plan apply` to the plan group, so import it first
    "plan": "strangler.routing_cli:plan",
    "routes": "strangler.routing_cli:routes",
    "flip": "strangler.routing_cli:flip",
    "cutover": "strangler.routing_cli:cutover",
    "history": "strangler.routing_cli:history",
    "rollback": "strangler.routing_cli:rollback",
    "compare": "strangler.compare_cli:compare",
    "shadow": "strangler.shadow_cli:shadow",
    "diffs": "strangler.shadow_cli:diffs",
    "migrate": "strangler.migrate.cli:migrate",
}


class LazyGroup(click.Group):
    """A group whose commands are imported the first time they are needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, in the order of ``COMMANDS``."""
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return the command called ``cmd_name`` (None when unknown)."""
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context) -> object:
        """Run the chosen command; a bad option value is one line (``Error: ...``), exit 2."""
        try:
            return super().invoke(ctx)
        except click.BadParameter as exc:
            raise BadValue(exc.format_message()) from None


class BadValue(click.UsageError):
    """A usage error shown as its one ``Error:`` line, without the usage text (exit status 2).

    The message already names the option and what it accepts; the usage
    synopsis above it would only push that line out of a CI log's last line.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, ctx=None)


@click.group(
    cls=LazyGroup,
    context_settings={"auto_envvar_prefix": "STRANGLER", "help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="strangler")
def cli() -> None:
    """Move a monolith's endpoints to extracted services, one at a time, behind Traefik."""


def main() -> None:
    """Console-script entry point."""
    cli(auto_envvar_prefix="STRANGLER")
