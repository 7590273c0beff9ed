"""``strangler shadow`` and ``strangler diffs``: live shadow traffic from the command line.

Thin Click commands over :mod:`strangler.shadow.control` (routing changes,
with the same --plan/--etcd/--traefik-api options and one-line refusals as
``strangler flip``) and :mod:`strangler.shadow.source` (the report: from the
comparator over HTTP, else its file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from router.keys import parse_endpoint
from strangler import routing
from strangler.plan import PlanError, load_plan
from strangler.plan.cli import plan_option
from strangler.routing.cli import Connection, report, routing_command, wait_options
from strangler.shadow import DB_NAME, control, source
from strangler.stack.state import read_state


@click.command()
@click.argument("endpoints", nargs=-1)
@click.option("--to", "target", metavar="SERVICE", help="The service compared with the monolith.")
@click.option("--service", metavar="NAME", help="Every endpoint the plan gives to NAME (compared with NAME).")
@click.option("--off", is_flag=True, help="Stop shadowing the named endpoints (none named: all).")
@click.option("--percent", type=click.IntRange(1, 100), default=None, metavar="1-100",
              help="The share of requests Traefik copies (default 100); the others cost users nothing.")
@wait_options
@routing_command
def shadow(conn: Connection, endpoints: tuple[str, ...], target: str | None, service: str | None,
           off: bool, percent: int | None, timeout: float, no_wait: bool) -> None:
    """Copy the named endpoints' traffic to the comparator, which compares SERVICE with the monolith.

    The monolith keeps answering users. ENDPOINT is "GET /api/users/<id>" or
    a Flask name. Recorded in the history; `strangler rollback` undoes it.
    Refused when the comparator or SERVICE has no healthy instance. See the
    results with `strangler diffs`. With --percent N, Traefik copies N % of
    the requests: on a busy endpoint, the comparator's load and the cost of
    copying stay bounded, and the requests not copied pay nothing.
    """
    api = conn.api(not no_wait)
    if off:
        if target or service or percent is not None:
            raise click.UsageError("--off takes endpoints only, not --to, --service or --percent")
        chosen = [conn.plan.endpoint(spec) for spec in endpoints]
        outcome = control.shadow_off(conn.etcd(), conn.plan, chosen, api=api, timeout=timeout)
    else:
        target = target or service
        if not target:
            raise click.UsageError("say which service to compare with: --to SERVICE (or --service NAME)")
        chosen = routing.resolve(conn.plan, endpoints, service)
        for line in control.unsafe_notes(conn.plan, chosen):
            click.echo(line)
        outcome = control.shadow_on(conn.etcd(), conn.plan, chosen, target, api=api, timeout=timeout,
                                    percent=100 if percent is None else percent)
    report(conn, outcome, outcome.change.what if outcome.change else "")


def _run_dir(plan_path: Path, run_dir: Path | None) -> tuple[Path, Any]:
    try:
        plan = load_plan(plan_path) if plan_path.is_file() else None
    except PlanError:
        plan = None
    where = run_dir or (plan.run_dir if plan else Path(".strangler"))
    return Path(where).resolve(), plan


def _endpoint_name(plan: Any, spec: str) -> str:
    try:
        return str(plan.endpoint(spec)) if plan else str(parse_endpoint(spec))
    except (PlanError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _rate(entry: dict) -> str:
    return "-" if entry["diff_rate"] is None else f"{entry['diff_rate']:.1%}"


def _etcd_url(plan: Any, where: Path, given: str | None) -> str | None:
    """--etcd / STRANGLER_ETCD, else the stack's state.json in the run dir, else the plan's fixed port."""
    if given:
        return given
    url = (read_state(where) or {}).get("etcd")
    if url:
        return url
    port = plan.stack.etcd_port if plan else 0
    return f"http://127.0.0.1:{port}" if port else None


def _check_urls(etcd_url: str | None, comparator_url: str | None) -> None:
    """BadParameter (exit 2, one line) for a malformed --etcd or --comparator, before anything is asked."""
    from urllib.parse import urlsplit

    from router.etcd import Etcd

    try:
        if etcd_url:
            Etcd(etcd_url)
    except ValueError as exc:
        raise click.BadParameter(" ".join(str(exc).split()), param_hint="--etcd") from None
    if comparator_url:
        try:
            parts = urlsplit(comparator_url)
            good = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # "http://[::1", a port out of range
            good = False
        if not good:
            raise click.BadParameter(f"{comparator_url!r} is not a comparator's URL: give "
                                     "http://HOST:PORT", param_hint="--comparator")


@click.command()
@click.argument("endpoint", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines (the source goes to stderr).")
@click.option("--examples", type=click.IntRange(0, 50), default=2, show_default=True,
              help="Example request/answer pairs shown per endpoint.")
@click.option("--comparator", "comparator_url", metavar="URL", envvar="STRANGLER_COMPARATOR", show_envvar=True,
              help="Ask this comparator [default: the ones registered in etcd].")
@click.option("--etcd", "etcd_url", envvar="STRANGLER_ETCD", metavar="URL", show_envvar=True,
              help="etcd's client URL (default: the running stack's, else the plan's etcd_port).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), envvar="STRANGLER_RUN_DIR",
              help="The stack's run dir, whose shadow.sqlite is read when no comparator answers "
                   "[default: the plan's run_dir].")
@plan_option
def diffs(plan_path: Path, endpoint: str | None, as_json: bool, examples: int, comparator_url: str | None,
          etcd_url: str | None, run_dir: Path | None) -> None:
    """Show what shadowing found, per endpoint: requests seen, compared, differing, dropped, the top
    differing fields (noise left out: fields the monolith lately disagrees with
    itself on, shown with their rates) and example request/answer pairs.

    Asked of the running comparator over HTTP (found in etcd, or --comparator),
    from any machine or container that reaches etcd; when none answers, read
    from the run dir's shadow.sqlite as the last run left it. The first line
    says which.
    """
    where, plan = _run_dir(plan_path, run_dir)
    name = _endpoint_name(plan, endpoint) if endpoint else None
    _check_urls(etcd_url, comparator_url)
    try:
        found = source.read(_etcd_url(plan, where, etcd_url), comparator_url, where / DB_NAME, name, examples)
    except source.NoSource as exc:
        raise click.ClickException(str(exc)) from None
    said = (f"read from {found.source}" if found.live
            else f"read from {found.source} (as last written: {found.why_not_live})")
    entries = found.entries
    if as_json:
        click.echo(said, err=True)
        click.echo(json.dumps(entries, indent=2))
        return
    click.echo(said)
    if not entries:
        what = f"for {name} " if name else ""
        click.echo(f"no shadow results {what}yet; start with strangler shadow ENDPOINT --to SERVICE")
        return
    console = Console(soft_wrap=True, highlight=False, width=None if os.isatty(1) else 200)
    grid = Table(title="shadow comparisons (monolith vs candidate)")
    for column in ("endpoint", "candidate", "seen", "compared", "differing", "diff rate",
                   "dropped", "sampled out", "skipped", "errors", "noise"):
        grid.add_column(column)
    for e in entries:
        rate = _rate(e) if not e["differing"] else f"[red]{_rate(e)}[/red]"
        dropped = f"[red]{e['dropped']}[/red]" if e["dropped"] else "0"
        grid.add_row(e["endpoint"], e["target"] or "-", *(str(e[k]) for k in (
            "seen", "compared", "differing")), rate, dropped, str(e["sampled_out"]), str(e["skipped"]),
            str(e["errors"]), str(len(e["noise"])))
    console.print(grid)
    dropped = sum(e["dropped"] for e in entries)
    if dropped:
        console.print(f"[yellow]{dropped} copies dropped: the comparator's queue was full. Compare a "
                      "share of them (STRANGLER_SHADOW_SAMPLE=0.5) or give it more workers "
                      "(STRANGLER_SHADOW_WORKERS).[/yellow]")
    for e in entries:
        _print_details(console, e)


def _print_details(console: Console, entry: dict) -> None:
    if entry["last_error"]:
        console.print(f"[yellow]{entry['endpoint']}: last error: {entry['last_error']}[/yellow]")
    if entry.get("noise_rates"):
        shown = ", ".join(f"{p} {rate:.0%}" + (" (noise)" if p in entry["noise"] else "")
                          for p, rate in entry["noise_rates"].items())
        console.print(f"{entry['endpoint']}: the monolith disagrees with itself lately on: {shown}; "
                      "a field marked noise is left out, the others only where it disagreed")
    if not entry["patterns"]:
        return
    fields = Table(title=f"{entry['endpoint']}: top differing fields")
    for column in ("field", "kind", "count"):
        fields.add_column(column)
    for p in entry["patterns"]:
        fields.add_row(p["pattern"], p["kind"], str(p["count"]))
    console.print(fields)
    for ex in entry["examples"]:
        req = ex["request"]
        console.print(f"[bold]{escape(req['method'] + ' ' + req['target'])}[/bold]  ({escape(ex['pattern'])})")
        for d in ex["differences"]:
            console.print(f"  {d['path']} ({d['kind']}): monolith [green]{escape(json.dumps(d['left']))}[/green]"
                          f"  candidate [red]{escape(json.dumps(d['right']))}[/red]")
        for side in ("monolith", "candidate"):
            shown = ex[side]
            console.print(f"  {side}: {shown['status']} {shown['body'][:300]}", markup=False)
