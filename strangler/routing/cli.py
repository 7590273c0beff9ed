"""``strangler routes / flip / history / rollback / cutover`` and ``strangler plan apply``.

Thin Click commands over :mod:`strangler.routing` and :mod:`strangler.routing.apply`.
Every command takes ``--plan``, ``--etcd`` (env STRANGLER_ETCD) and
``--traefik-api`` (env STRANGLER_TRAEFIK_API); without them the URLs come
from the running stack's ``<run_dir>/state.json``, else from the plan's
``[stack]`` ports. Every refusal is one line, and nothing is written.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from router import table
from router.etcd import Etcd, EtcdError, EtcdUnavailable
from router.traefik import TraefikAPI, TraefikError
from strangler import options, routing
from strangler.plan import Plan, PlanError
from strangler.plan.cli import open_plan, plan_option
from strangler.routing import apply as routing_plan
from strangler.stack.state import read_state

if TYPE_CHECKING:
    from rich.console import Console

REFUSALS = (
    PlanError,
    routing.RoutingError,
    EtcdError,
    table.ConcurrentChange,
    table.RollbackRefused,
    table.TableTooLarge,
    TraefikError,
    ValueError,  # a malformed --etcd URL
)


@dataclass
class Connection:
    """The plan and where etcd and Traefik's API are, for one command run."""

    plan: Plan
    etcd_url: str
    traefik_url: str
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def resolve(cls, plan: Plan, etcd_url: str | None, traefik_url: str | None) -> Connection:
        """Flags/env first, then the stack's state.json, then the plan's ports.

        The local stack serves Traefik's API and dashboard on ``dashboard_port``.
        Raises NoStackRunning when etcd's port is only known to a stack that is
        not running; Traefik's, only once a command needs its API.
        """
        return cls(plan, etcd_url or stack_url(plan, "etcd"),
                   traefik_url or _stack_url_or_none(plan, "traefik_api"))

    def etcd(self) -> Etcd:
        """A client for etcd (nothing is sent yet; EtcdUnavailable comes with the first call)."""
        return Etcd(self.etcd_url)

    def api(self, wait: bool = True) -> TraefikAPI | None:
        """Traefik's API client, or None when the command should not wait for it."""
        if not wait:
            return None
        return TraefikAPI(self.traefik_url or stack_url(self.plan, "traefik_api"))


class NoStackRunning(click.ClickException):
    """A stack URL was needed, no stack is running, and the plan leaves the port to the stack."""


# state.json key -> (the plan's [stack] port, the flag that names the URL instead)
STACK_URLS = {"etcd": ("etcd_port", "--etcd"), "traefik_api": ("dashboard_port", "--traefik-api")}


def stack_url(plan: Plan, key: str) -> str:
    """The running stack's *key* URL (``etcd``/``traefik_api``), else the plan's fixed port's.

    With ``[stack] <port> = 0`` the port exists only while a stack runs, so
    without one this raises NoStackRunning (one line saying how to start one)
    rather than guess a port, such as a system etcd's 2379.
    """
    url = (read_state(plan.run_dir) or {}).get(key)
    if url:
        return url
    port_name, flag = STACK_URLS[key]
    port = getattr(plan.stack, port_name)
    if port:
        return f"http://127.0.0.1:{port}"
    up = f"strangler up --plan {plan.path}" if plan.path else "strangler up"
    raise NoStackRunning(
        f"no stack is running from {plan.run_dir} and the plan's [stack] {port_name} = 0 "
        f"(a free port at start): start one with `{up}`, or pass {flag} URL"
    )


def _stack_url_or_none(plan: Plan, key: str) -> str | None:
    try:
        return stack_url(plan, key)
    except NoStackRunning:
        return None


def routing_command(command: Callable) -> Callable:
    """Decorator: add --plan/--etcd/--traefik-api, pass ``conn``, turn refusals into one line."""

    @functools.wraps(command)
    def wrapper(*args: Any, plan_path: Path, etcd_url: str | None, traefik_url: str | None,
                **kwargs: Any) -> Any:
        conn = Connection.resolve(open_plan(plan_path), etcd_url, traefik_url)
        try:
            return command(*args, conn=conn, **kwargs)
        except EtcdUnavailable as exc:
            raise click.ClickException(_etcd_down(conn, exc)) from None
        except REFUSALS as exc:
            raise click.ClickException(" ".join(str(exc).split())) from None

    wrapper = click.option(
        "--traefik-api", "traefik_url", envvar="STRANGLER_TRAEFIK_API", metavar="URL", show_envvar=True,
        help="Traefik's API (default: the running stack's, else the plan's dashboard_port).",
    )(wrapper)
    wrapper = click.option(
        "--etcd", "etcd_url", envvar="STRANGLER_ETCD", metavar="URL", show_envvar=True,
        help="etcd's client URL (default: the running stack's, else the plan's etcd_port).",
    )(wrapper)
    return plan_option(wrapper)


def _etcd_down(conn: Connection, exc: EtcdUnavailable) -> str:
    """What to say when no etcd member answers: whether traffic still flows, and that nothing changed."""
    from strangler.stack.procs import http_ok  # only on this error path

    if conn.traefik_url and http_ok(f"{conn.traefik_url}/api/overview"):
        return (f"etcd not answering at {conn.etcd_url}; traffic keeps flowing on the last routing "
                f"Traefik loaded (its API answers at {conn.traefik_url}); nothing was changed: "
                "bring etcd back (strangler status shows it) and retry")
    return " ".join(str(exc).split())


def wait_options(command: Callable) -> Callable:
    """Add --timeout and --no-wait (how long to wait for Traefik to confirm)."""
    command = click.option("--no-wait", is_flag=True,
                           help="Do not wait for Traefik's API to confirm the change.")(command)
    return click.option("--timeout", type=options.WAIT, default=10.0, show_default=True,
                        help="Seconds to wait for Traefik to apply the change.")(command)


def _console() -> Console:
    from rich.console import Console  # ~40 ms to import: only the commands that print tables

    # Piped output (grep, less, tests) gets whole lines instead of an 80-column wrap.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report(conn: Connection, outcome: routing.Outcome, done: str) -> None:
    """Print what a change did, its id and revision, and how long Traefik took."""
    change = outcome.change
    if change is None:
        click.echo("nothing to change: the routing already is as asked")
        return
    click.echo(f"{done} (change {change.id}, etcd revision {change.revision})")
    total = time.monotonic() - conn.started
    if outcome.live_s is None:
        click.echo("not waiting for Traefik (--no-wait)")
    else:
        click.echo(
            f"Traefik confirmed it live {_ms(outcome.live_s)} after the write, "
            f"{_ms(total)} after the command started"
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--watch", is_flag=True, help="Redraw the table live until Ctrl-C.")
@click.option("--interval", type=options.WATCH_INTERVAL, default=1.0, show_default=True,
              help="Seconds between two redraws with --watch.")
@routing_command
def routes(conn: Connection, as_json: bool, watch: bool, interval: float) -> None:
    """Show every endpoint: who serves it now (weights, shadow), its state, and whether the plan agrees."""
    if watch:
        if as_json:
            raise click.UsageError("give --json or --watch, not both")
        etcd = conn.etcd()
        table.load(etcd)  # etcd not answering: one line before the screen is taken

        def view() -> Any:
            try:
                return _routes_grid(conn, table.load(etcd)[0])
            except EtcdError as exc:
                return f"etcd not answering: {exc} (Ctrl-C to stop)"

        options.watch(view, interval)
        return
    current, _ = table.load(conn.etcd())
    if as_json:
        click.echo(json.dumps(routing_plan.route_rows(conn.plan, current), indent=2))
        return
    _console().print(_routes_grid(conn, current))


def _routes_grid(conn: Connection, current: dict) -> Any:
    """``strangler routes``'s table for the route table ``current``."""
    from rich.table import Table

    rows = routing_plan.route_rows(conn.plan, current)
    grid = Table(title=f"routes (strategy {conn.plan.strategy})")
    for column in ("method", "path", "serving", "state", "owner", "plan"):
        grid.add_column(column)
    for row in rows:
        verdict = ("yes" if row["plan_agrees"] else "[red]NO[/red]") + (
            f" - {row['note']}" if row["note"] else ""
        )
        grid.add_row(row["method"], row["path"], row["serving"], row["state"],
                     row["owner"] or "-", verdict)
    return grid


def parse_weight_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """``--weight``'s callback: ``routing.parse_weight``, a bad value being a usage error (exit 2)."""
    try:
        return routing.parse_weight(value)
    except routing.RoutingError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("endpoints", nargs=-1)
@click.option("--service", metavar="NAME", help="Every endpoint the plan gives to service NAME.")
@click.option("--to", "target", required=True, metavar="BACKEND", help="The backend to move them to.")
@click.option("--weight", metavar="N", callback=parse_weight_option,
              help="Canary: send N % (1-99) to BACKEND, the rest stays.")
@click.option("--header", "match", metavar="'NAME: VALUE'",
              help="A/B route: only requests with this header go to BACKEND.")
@click.option("--cookie", metavar="NAME=VALUE",
              help="A/B route: only requests with this cookie go to BACKEND.")
@click.option("--sticky/--no-sticky", default=None,
              help="Canary: keep each user on one side with a cookie (default: on for PREFIX endpoints).")
@wait_options
@routing_command
def flip(conn: Connection, endpoints: tuple[str, ...], service: str | None, target: str,
         weight: int | None, match: str | None, cookie: str | None, sticky: bool | None,
         timeout: float, no_wait: bool) -> None:
    """Move the named endpoints (or --service NAME's) to BACKEND, in one change.

    ENDPOINT is "GET /api/users/<id>" or the monolith's endpoint name
    (api.get_user). Refused when the strategy forbids it or BACKEND has no
    healthy registered instance. Returns once Traefik's API shows it live.
    With --header or --cookie only matching requests go to BACKEND (an A/B
    route beside the endpoint's own); `strangler rollback` undoes it.
    """
    try:  # a malformed --header/--cookie is a usage error: exit 2, one line
        routing.parse_match(target, match, cookie, weight)
    except routing.RoutingError as exc:
        raise click.BadParameter(str(exc)) from None
    if sticky is not None and weight is None:  # it was taken and silently ignored
        raise click.BadParameter("--sticky/--no-sticky is for a canary: give --weight N too",
                                 param_hint="--sticky")
    chosen = routing.resolve(conn.plan, endpoints, service)
    outcome = routing.flip(conn.etcd(), conn.plan, chosen, target, weight=weight, match=match,
                           cookie=cookie, sticky=sticky, api=conn.api(not no_wait), timeout=timeout)
    report(conn, outcome, outcome.change.what if outcome.change else "")


@click.command()
@click.option("--all", "everything", is_flag=True, help="Required: every planned endpoint moves.")
@wait_options
@routing_command
def cutover(conn: Connection, everything: bool, timeout: float, no_wait: bool) -> None:
    """Strategy big-bang: move every endpoint to the service that owns it, in ONE change.

    One `strangler rollback` returns them all.
    """
    if not everything:
        raise click.ClickException("say --all: cutover moves every planned endpoint at once")
    outcome = routing.cutover_all(conn.etcd(), conn.plan, api=conn.api(not no_wait), timeout=timeout)
    report(conn, outcome, outcome.change.what if outcome.change else "")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@routing_command
def history(conn: Connection, as_json: bool) -> None:
    """List every routing change: id, time, who, what, and the etcd revision it wrote."""
    changes = table.history(conn.etcd())
    undone = table.cancelled(changes)
    if as_json:
        rows = [{**c.to_dict(), "revision": c.revision, "in_effect": c.id not in undone}
                for c in changes]
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    grid = Table(title="routing history")
    for column in ("id", "time", "who", "what", "revision"):
        grid.add_column(column)
    for c in changes:
        what = c.what + (" [dim](undone)[/dim]" if c.id in undone and c.rollback_of is None else "")
        grid.add_row(str(c.id), c.time, c.who, what, str(c.revision))
    _console().print(grid)
    if not changes:
        click.echo("no routing changes yet (strangler plan apply makes the first)")


@click.command()
@click.argument("change_id", required=False)
@click.option("--any", "anyone", is_flag=True,
              help="Undo the latest change still in effect, whoever made it.")
@click.option("--force", is_flag=True,
              help="Undo it even if a later change touched the same endpoints or the plan forbids the result.")
@wait_options
@routing_command
def rollback(conn: Connection, change_id: str | None, anyone: bool, force: bool, timeout: float,
             no_wait: bool) -> None:
    """Undo your latest change still in effect, or CHANGE_ID; the undo is itself a change.

    "Your" is user@host as recorded in strangler history. Someone else's
    change needs its id (or --any). Repeated rollbacks walk back through
    your changes. Refused when a later change touched the same endpoints or
    the plan no longer allows where the undo would put an endpoint, unless --force.
    """
    if change_id is not None and anyone:
        raise click.UsageError("give a CHANGE_ID or --any, not both")
    if change_id is not None and not change_id.isdigit():
        raise click.ClickException(f"{change_id!r} is not a change id; see strangler history")
    target = int(change_id) if change_id is not None else None
    outcome = routing.rollback(conn.etcd(), target, plan=conn.plan, force=force, anyone=anyone,
                               api=conn.api(not no_wait), timeout=timeout)
    report(conn, outcome, outcome.change.what if outcome.change else "")
    if outcome.undone is not None:
        me = outcome.change.who
        whose = f"yours ({me})" if outcome.undone.who == me else f"{outcome.undone.who}'s, not yours ({me})"
        click.echo(f"change {outcome.undone.id} was {whose}")


@click.command("apply")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--yes", is_flag=True, help="Move live routes the plan sends elsewhere.")
@click.option("--keep-live", is_flag=True,
              help="Leave live routes the plan would move where they are; apply the rest.")
@wait_options
@routing_command
def apply_(conn: Connection, dry_run: bool, yes: bool, keep_live: bool, timeout: float,
           no_wait: bool) -> None:
    """Make etcd's routing match the plan: add its endpoints, drop others, reset what it forbids.

    Idempotent; flips the plan allows are kept. A live route the plan would
    move (an endpoint's answering backend changes) is listed, and moved only
    with --yes; --keep-live applies the rest (what strangler up does).
    --dry-run shows every change first.
    """
    if yes and keep_live:
        raise click.UsageError("give --yes (move live routes) or --keep-live (leave them), not both")
    mode = "move" if yes else "keep" if keep_live else "refuse"
    try:
        outcome = routing_plan.apply_plan(conn.etcd(), conn.plan, dry_run=dry_run, moves=mode,
                                          api=conn.api(not no_wait and not dry_run),
                                          timeout=timeout)
    except routing_plan.MovesLiveTraffic as exc:
        _echo_moves("live routes it would move:", exc.moves)
        raise
    for line in outcome.lines:
        click.echo(line)
    if dry_run:
        _echo_moves("live routes it would move (only with --yes):", outcome.moves)
    elif keep_live:
        _echo_moves("live routes kept where they are (plan apply --yes moves them):", outcome.moves)
    else:
        _echo_moves("live routes moved:", outcome.moves)
    if not outcome.lines:
        click.echo("etcd already matches the plan" if not outcome.moves else "nothing else to change")
    elif dry_run:
        click.echo(f"dry run: {len(outcome.lines)} change(s), nothing written")
    else:
        report(conn, outcome, "applied the plan")


def _echo_moves(title: str, moves: list[str]) -> None:
    if moves:
        click.echo(title)
        for move in moves:
            click.echo(f"  {move}")
