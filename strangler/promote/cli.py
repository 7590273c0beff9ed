"""``strangler promote``, ``strangler promotions`` and ``strangler controller``.

``promote`` checks everything it can without writing (exit 2, one line, on
any refusal), stores the promotion in etcd and, unless ``--detach``, prints
the controller's progress until it ends: exit 0 promoted, 1 rolled back.
Ctrl-C stops the watching, never the promotion.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from router import registry, table
from router.etcd import Etcd, EtcdError
from router.keys import MONOLITH, SAFE
from strangler import routing
from strangler.links import read_links
from strangler.plan import Plan, PlanError
from strangler.plan.cli import open_plan, plan_option
from strangler.promote import analysis, records
from strangler.promote.controller import COMPARATOR, Controller, ControllerBusy
from strangler.routing.cli import Connection, _console, stack_url

EXIT = {records.PROMOTED: 0, records.ROLLED_BACK: 1}
# the analysis a promotion gets unless told otherwise (the CLI's option defaults, the console's buttons)
DEFAULTS: dict[str, Any] = {"steps": "5,25,50,100", "interval": "30s", "max_error_rate": "1%",
                            "max_latency_ratio": "1.5", "max_diff_rate": "1%", "min_requests": 20}


class Refused(click.ClickException):
    """A promotion refused before anything was written: one line, exit 2."""

    exit_code = 2


def _connection(plan_path: Path, etcd_url: str | None, traefik_url: str | None) -> Connection:
    return Connection.resolve(open_plan(plan_path), etcd_url, traefik_url)


def connection_options(command: Callable) -> Callable:
    """--plan, --etcd and --traefik-api, as the routing commands take them."""
    command = click.option("--traefik-api", "traefik_url", envvar="STRANGLER_TRAEFIK_API", metavar="URL",
                           help="Traefik's API (default: the running stack's).")(command)
    command = click.option("--etcd", "etcd_url", envvar="STRANGLER_ETCD", metavar="URL",
                           help="etcd's client URL (default: the running stack's).")(command)
    return plan_option(command)


def build(conn: Connection, endpoints: tuple[str, ...], service: str | None, target: str,
          steps: str, interval: str, max_error_rate: str, max_latency_ratio: str, max_diff_rate: str,
          min_requests: int, who: str | None = None) -> Callable[[int], records.Promotion]:
    """Check a promotion without writing (Refused, one line) and return what creates its record.

    ``who`` is recorded as the promotion's author, and so on every change it
    makes (default: this user@host).
    """
    try:
        plan_steps = analysis.parse_steps(steps)
        seconds = analysis.parse_interval(interval)
        limits = analysis.Thresholds(
            max_error_rate=analysis.parse_rate("--max-error-rate", max_error_rate),
            max_latency_ratio=analysis.parse_ratio("--max-latency-ratio", max_latency_ratio),
            max_diff_rate=analysis.parse_rate("--max-diff-rate", max_diff_rate),
            min_requests=min_requests)
        plan = conn.plan
        chosen = routing.resolve(plan, endpoints, service)
        plan.backend(target)
        wanted = routing.route_backend(plan, target)
        if wanted == MONOLITH:
            raise Refused(f"--to {target}: promote moves endpoints to a service; "
                          "to move back, use strangler flip or strangler rollback")
        routing.check_flip(plan, chosen, target)
        etcd = conn.etcd()
        current, _ = table.load(etcd)
        for endpoint in chosen:
            route = current.get(endpoint)
            if route is None:
                raise Refused(f"{endpoint} is not in the routing table yet; run strangler plan apply")
            if route.backend == wanted and not route.weights:
                raise Refused(f"{endpoint} is served by {target} already; nothing to promote")
        routing.check_linked(etcd, plan, [target])
        routing.check_healthy(etcd, plan, [target])
        if records.controller_alive(etcd) is None:
            raise Refused("no controller is running to carry the promotion: start the stack "
                          "(strangler up starts one) or run `strangler controller`")
        running = records.running_on(etcd, [str(e) for e in chosen])
        if running is not None:
            raise Refused(f"promotion {running} is running on these endpoints; wait for it, "
                          f"or stop it with `strangler promote --abort ...`")
    except (analysis.BadPromotion, PlanError, routing.RoutingError, EtcdError, ValueError) as exc:
        raise Refused(" ".join(str(exc).split())) from None
    whole = _inserting(plan, chosen, etcd)
    reads = _reads(plan, target, current, chosen, etcd) if whole else []
    mode_steps = ([0] if reads else []) + [100] if whole else list(plan_steps)
    specs = [str(e) for e in chosen]
    before = {str(e): current[e].to_dict() for e in chosen}
    before |= {str(e): route.to_dict() for e, route in current.items() if str(e) in reads}
    who = who or table.current_user()

    def make(promotion_id: int) -> records.Promotion:
        return records.Promotion(
            id=promotion_id, endpoints=specs, target=wanted, steps=mode_steps, interval=seconds,
            thresholds=limits.to_dict(), who=who, mode="whole" if whole else "canary", reads=reads,
            before=before)

    return make


def start(conn: Connection, endpoints: tuple[str, ...] | list[str], service: str | None, target: str, *,
          who: str | None = None, **analysis: Any) -> records.Promotion:
    """Check and store a promotion (``DEFAULTS`` for the analysis not given); Refused, one line, when
    anything says no, and then nothing is written. The controller carries it from there."""
    settings = {**DEFAULTS, **analysis}
    make = build(conn, tuple(endpoints), service, target, settings["steps"], settings["interval"],
                 settings["max_error_rate"], settings["max_latency_ratio"], settings["max_diff_rate"],
                 settings["min_requests"], who=who)
    try:
        return records.create(conn.etcd(), make)
    except (records.PromotionRefused, EtcdError) as exc:
        raise Refused(str(exc)) from None


def _inserting(plan: Plan, chosen: list, etcd: Any) -> bool:
    """True when an endpoint inserts rows and the table has no id lanes: no canary, flip whole."""
    if not any(plan.inserted_tables(e) for e in chosen):
        return False
    try:
        routing.check_canary(plan, chosen, 1, read_links(etcd))
    except routing.RoutingError:
        return True
    return False


def _reads(plan: Plan, target: str, current: dict, chosen: list, etcd: Any) -> list[str]:
    """The target's read endpoints still answered by the monolith alone, to shadow first (if possible)."""
    if not registry.healthy_instances(etcd, COMPARATOR, timeout=1.0):
        return []
    found = []
    for endpoint in plan.service_endpoints(target):
        route = current.get(endpoint)
        if endpoint in chosen or endpoint.method not in SAFE or route is None:
            continue
        if route.backend == MONOLITH and not route.weights and not route.mirror and not route.match:
            found.append(str(endpoint))
    return found


@click.command()
@click.argument("endpoints", nargs=-1)
@click.option("--service", metavar="NAME", help="Every endpoint the plan gives to service NAME.")
@click.option("--to", "target", metavar="BACKEND", help="The service to promote them to.")
@click.option("--steps", default=DEFAULTS["steps"], show_default=True,
              help="The candidate's share at each step, in %; 100 means flipped.")
@click.option("--interval", default=DEFAULTS["interval"], show_default=True, help="How long each step is watched (5s, 1m).")
@click.option("--max-error-rate", default=DEFAULTS["max_error_rate"], show_default=True, help="Highest share of 5xx from the candidate.")
@click.option("--max-latency-ratio", default=DEFAULTS["max_latency_ratio"], show_default=True,
              help="Highest candidate p99 / current p99 over the same interval.")
@click.option("--max-diff-rate", default=DEFAULTS["max_diff_rate"], show_default=True,
              help="Highest diff rate from the comparator (when the endpoint is shadowed).")
@click.option("--min-requests", default=DEFAULTS["min_requests"], show_default=True, type=click.IntRange(1, 1_000_000),
              help="Fewer candidate requests in an interval: not enough data, wait.")
@click.option("--detach", is_flag=True, help="Return once the promotion is stored.")
@click.option("--abort", is_flag=True, help="Stop the promotion running on ENDPOINT/--service: roll it back.")
@connection_options
def promote(plan_path: Path, etcd_url: str | None, traefik_url: str | None, endpoints: tuple[str, ...],
            service: str | None, target: str | None, steps: str, interval: str, max_error_rate: str,
            max_latency_ratio: str, max_diff_rate: str, min_requests: int, detach: bool, abort: bool) -> None:
    """Move endpoints (or --service NAME's) to BACKEND step by step, judged on live metrics.

    At each step the controller sets the weight, waits one interval, reads
    Traefik's metrics (5xx share, p99 against the current backend's) and the
    comparator's diff rate, and goes on or rolls back to where the endpoints
    were before, in one change. Exit 0 promoted, 1 rolled back, 2 refused.
    Ctrl-C stops watching, not the promotion (--abort does; it exits 0 once
    rolled back, 1 if the promotion ended promoted first).
    """
    conn = _connection(plan_path, etcd_url, traefik_url)
    if abort:
        promotion_id = request_abort(conn, endpoints, service)
        click.echo(f"promotion {promotion_id}: abort asked; the controller rolls it back")
    else:
        if not target:
            raise Refused("say where to: --to BACKEND")
        promotion = start(conn, endpoints, service, target, steps=steps, interval=interval,
                          max_error_rate=max_error_rate, max_latency_ratio=max_latency_ratio,
                          max_diff_rate=max_diff_rate, min_requests=min_requests)
        promotion_id = promotion.id
        click.echo(_started_line(promotion))
    if detach:
        click.echo(f"promotion {promotion_id} goes on in the controller; follow it with strangler promotions")
        return
    status = follow(conn, promotion_id)
    if abort and status in (0, 1):  # an abort succeeds when it rolled back (1 would read as a failure)
        status = 0 if status == 1 else 1
    raise SystemExit(status)


def _started_line(p: records.Promotion) -> str:
    what = ", ".join(p.endpoints)
    if p.mode == "whole":
        shadow = f"shadow {len(p.reads)} read endpoint(s) first, then " if p.reads else ""
        return (f"promotion {p.id}: {what} to {p.target} - it inserts rows, so no canary: "
                f"{shadow}flip whole and watch one interval ({p.interval:g}s), rolling back on a breach")
    steps = ",".join(str(s) for s in p.steps)
    return f"promotion {p.id}: {what} to {p.target}, steps {steps}%, {p.interval:g}s each"


def request_abort(conn: Connection, endpoints: tuple[str, ...] | list[str], service: str | None,
                  who: str | None = None) -> int:
    """Ask the controller to roll back the promotion running on these endpoints; its id.

    Refused (one line, nothing written) when none runs there. ``who`` is
    recorded as who aborted it (default: this user@host).
    """
    try:
        chosen = routing.resolve(conn.plan, endpoints, service)
        etcd = conn.etcd()
        promotion_id = records.running_on(etcd, [str(e) for e in chosen])
        if promotion_id is None:
            raise Refused("no promotion is running on these endpoints; see strangler promotions")
        records.update(etcd, promotion_id, lambda p: setattr(p, "abort", who or table.current_user()))
    except (PlanError, routing.RoutingError, EtcdError, records.PromotionRefused) as exc:
        raise Refused(" ".join(str(exc).split())) from None
    return promotion_id


def follow(conn: Connection, promotion_id: int, poll: float = 0.2) -> int:
    """Print the promotion's log as it grows until it ends; its exit status (Ctrl-C: 130)."""
    console = _console()
    etcd = conn.etcd()
    shown = 0
    try:
        while True:
            try:
                found = records.get(etcd, promotion_id)
            except records.MalformedPromotion as exc:
                console.print(str(exc), highlight=False)
                return 1
            if found is None:
                console.print(f"promotion {promotion_id} is gone")
                return 1
            promotion = found[0]
            for entry in promotion.log:
                if entry.get("n", 0) > shown:
                    console.print(_styled(entry), highlight=False)
                    shown = entry["n"]
            if promotion.state in records.ENDED:
                console.print(f"promotion {promotion.id}: {promotion.outcome}", highlight=False)
                return EXIT[promotion.state]
            time.sleep(poll)
    except KeyboardInterrupt:
        console.print(f"\nstopped watching; promotion {promotion_id} goes on in the controller "
                      f"(strangler promotions; stop it with strangler promote --abort ...)")
        return 130


def _styled(entry: dict[str, Any]) -> str:
    color = {"pass": "green", "fail": "red", "wait": "yellow"}.get(entry.get("verdict", ""))
    stamp = datetime.fromtimestamp(entry["time"], UTC).strftime("%H:%M:%S")
    text = entry["line"].replace("[", "\\[")
    return f"{stamp} [{color}]{text}[/{color}]" if color else f"{stamp} {text}"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@connection_options
def promotions(plan_path: Path, etcd_url: str | None, traefik_url: str | None, as_json: bool) -> None:
    """List running and recent promotions: endpoints, target, step, state, last figures."""
    conn = _connection(plan_path, etcd_url, traefik_url)
    malformed: list[str] = []
    try:
        found = records.all_promotions(conn.etcd(), malformed)
    except EtcdError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    for line in malformed:
        click.echo(f"warning: {line}", err=True)
    if as_json:
        click.echo(json.dumps([json.loads(p.to_json()) for p in found], indent=2))
        return
    grid = Table(title="promotions")
    for column in ("id", "endpoints", "to", "step", "state", "last"):
        grid.add_column(column)
    for p in found:
        step = "shadow" if p.weight == 0 else f"{p.weight}%"
        last = p.log[-1]["line"] if p.log else ""
        grid.add_row(str(p.id), ", ".join(p.endpoints), p.target, step, p.outcome or p.state, last)
    _console().print(grid)
    if not found:
        click.echo("no promotions yet (strangler promote starts one)")


@click.command()
@click.option("--traefik-metrics", "metrics_urls", multiple=True, metavar="URL",
              help="A Traefik's API/metrics URL (repeatable; default: the running stack's).")
@click.option("--shadow-store", type=click.Path(path_type=Path), help="The comparator's results file.")
@click.option("--tick", default=0.2, show_default=True, type=click.FloatRange(0.05, 10),
              help="Seconds between two passes over the running promotions.")
@connection_options
def controller(plan_path: Path, etcd_url: str | None, traefik_url: str | None, metrics_urls: tuple[str, ...],
               shadow_store: Path | None, tick: float) -> None:
    """Carry the promotions stored in etcd (strangler up runs one); stops on SIGTERM or Ctrl-C.

    With --etcd, --traefik-metrics and --shadow-store all given, no plan is read.
    """
    urls = list(metrics_urls) or ([traefik_url] if traefik_url else [])
    if not (etcd_url and urls and shadow_store):
        conn = _connection(plan_path, etcd_url, traefik_url)
        etcd_url = conn.etcd_url
        urls = urls or [conn.traefik_url or stack_url(conn.plan, "traefik_api")]
        shadow_store = shadow_store or conn.plan.run_dir / "shadow.sqlite"
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        worker = Controller(Etcd(etcd_url), urls, shadow_store, tick=tick)
        click.echo(f"controller: etcd {etcd_url}, metrics from {', '.join(urls)}", err=True)
        worker.run(stop)
    except (ControllerBusy, EtcdError) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
