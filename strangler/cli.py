"""The ``strangler`` command: one Click group, commands from the modules that own them.

Commands are imported only when used: the monolith and the services pull in
Flask-SocketIO, SQLAlchemy and alembic, which cost ~0.8 s at start-up and
which routing commands such as ``flip`` never need.
"""

from __future__ import annotations

import click

from strangler.options import LazyGroup

# command name -> "module:attribute"; the module owns the command.
COMMANDS = {
    "up": "strangler.stack.cli:up",
    "down": "strangler.stack.cli:down",
    "status": "strangler.stack.cli:status",
    "scale": "strangler.stack.scale_cli:scale",
    "upgrade": "strangler.stack.scale_cli:upgrade",
    "retire": "strangler.stack.retire_cli:retire",
    "unretire": "strangler.stack.retire_cli:unretire",
    "logs": "strangler.stack.cli:logs",
    "monolith": "monolith.server:monolith_command",
    "init": "strangler.scaffold.cli:init",
    "new": "strangler.scaffold.cli:new",
    "scan": "strangler.plan.cli:scan",
    "plan": "strangler.plan.cli:plan",
    "routes": "strangler.routing.cli:routes",
    "flip": "strangler.routing.cli:flip",
    "cutover": "strangler.routing.cli:cutover",
    "history": "strangler.routing.cli:history",
    "rollback": "strangler.routing.cli:rollback",
    "promote": "strangler.promote.cli:promote",
    "promotions": "strangler.promote.cli:promotions",
    "controller": "strangler.promote.cli:controller",
    "compare": "strangler.compare.cli:compare",
    "shadow": "strangler.shadow.cli:shadow",
    "diffs": "strangler.shadow.cli:diffs",
    "migrate": "strangler.migrate.cli:migrate",
    "link": "strangler.migrate.cli:link",
    "console": "strangler.console.cli:console",
}


@click.group(
    cls=LazyGroup,
    commands=COMMANDS,
    context_settings={"auto_envvar_prefix": "STRANGLER", "help_option_names": ["-h", "--help"]},
)
# The version is read from the package metadata only when --version is asked for.
@click.version_option(prog_name="strangler", package_name="strangler")
def cli() -> None:
    """Move a monolith's endpoints to extracted services, one at a time, behind Traefik."""


def main() -> None:
    """Console-script entry point."""
    cli(auto_envvar_prefix="STRANGLER")
