"""The ranges of the commands' numeric options, in one place.

Every number a command takes is checked by Click before the command runs, so
a bad value is a usage error (exit 2) naming the option and the range, never
a traceback or an exit status the command gives another meaning (``compare``
exits 1 for "they differ").
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from typing import Any

import click

# an hour: beyond that a wait is a mistake, and socket timeouts overflow far above it
MAX_WAIT = 3600.0
# rows per transaction of `migrate copy`: bigger chunks only hold locks and memory longer
MAX_CHUNK = 100_000


class Seconds(click.FloatRange):
    """A finite number of seconds in a range (``nan`` and ``inf`` are refused too)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The value as a float, or a usage error that names the range."""
        number = super().convert(value, param, ctx)
        if math.isnan(number):  # a NaN compares False with both ends, so the range let it in
            self.fail(f"{value!r} is not a number of seconds in the range {self._describe_range()}.",
                      param, ctx)
        return number


# seconds to wait for an answer or a confirmation
WAIT = Seconds(min=0, min_open=True, max=MAX_WAIT)
CHUNK = click.IntRange(1, MAX_CHUNK)
PASSES = click.IntRange(min=0)
# between two sync passes: 50 ms keeps a follower from spinning; an hour is the longest useful wait
SYNC_INTERVAL = Seconds(min=0.05, max=MAX_WAIT)
# between two redraws of a --watch view: faster only burns CPU, slower is no longer "live"
WATCH_INTERVAL = Seconds(min=0.2, max=60)


def watch(view: Callable[[], Any], interval: float) -> None:
    """Redraw ``view()`` (a Rich renderable) every ``interval`` seconds until Ctrl-C (then exit 0)."""
    from rich.console import Console
    from rich.live import Live

    try:
        with Live(view(), console=Console(highlight=False), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return


def show_envvars(command: click.Command) -> None:
    """Make ``--help`` name each option's environment variable (Click's automatic ones included).

    The rule is Click's: ``STRANGLER_<COMMAND>_<OPTION>`` (``STRANGLER_FLIP_WEIGHT``,
    ``STRANGLER_MIGRATE_COPY_CHUNK``), except the shared options that name
    theirs (``STRANGLER_PLAN``, ``STRANGLER_ETCD``, ``STRANGLER_TRAEFIK_API``,
    ``STRANGLER_RUN_DIR``, the ports).
    """
    for param in command.params:
        if isinstance(param, click.Option) and not param.is_flag and param.name != "help":
            param.show_envvar = True
    for sub in getattr(command, "commands", {}).values():  # a plain group's own commands
        show_envvars(sub)


class LazyGroup(click.Group):
    """A group whose commands (``name -> "module:attribute"``) are imported when first needed.

    Every subcommand is named here, explicitly: none registers itself by
    being imported, so the order of imports never decides what exists.
    """

    def __init__(self, *args: Any, commands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, in the order given."""
        return list(self.lazy)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return the command called ``cmd_name`` (None when unknown)."""
        target = self.lazy.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        show_envvars(command)
        return command

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
