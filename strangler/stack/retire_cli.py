"""``strangler retire`` and ``strangler unretire``: end a migration by stopping the monolith, or undo it.

See strangler.stack.retire for what "retired" means and what the supervisor does.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import click

from strangler.plan.cli import open_plan, plan_option
from strangler.stack.cli import run_dir_option
from strangler.stack.scale_cli import _running_stack


def _linked_services(plan, etcd) -> list[str]:  # noqa: ANN001
    from strangler.links import is_linked, read_links

    links = read_links(etcd)
    return [s for s in plan.data_services() if plan.backend(s).start and is_linked(plan, s, links)]


def _roll(plan, etcd, where: Path, service: str, env: dict[str, str], who: str, suffix: str):  # noqa: ANN001, ANN202
    """The upgrade intent that rolls ``service`` onto ``env`` (UpgradeRefused when one is pending).

    The release is named ``<label>-<suffix>``: write-through is not part of
    the label, so after an ``up`` of a retired stack the plain label already
    runs without it, and a roll needs a name of its own.
    """
    from strangler.stack.release import release_label
    from strangler.stack.state import read_status
    from strangler.stack.upgrade import Intent, decide, stamp, upgrade_key

    running = [p["release"] for p in read_status(where).values()
               if p.get("backend") == service and p.get("state") != "draining"]
    current = Intent.from_json(etcd.get(upgrade_key(service)))
    release = f"{release_label(plan, service, env, fresh=True)}-{suffix}"
    return stamp(decide("roll", current, release, env, running, True), who)


def _wait(where: Path, etcd, monolith: str, want: int, rolls: dict, timeout: float) -> float:  # noqa: ANN001
    """Wait until the monolith has ``want`` healthy instances (none at all for 0) and every roll is done."""
    from strangler.stack.scale import progress
    from strangler.stack.state import read_status
    from strangler.stack.upgrade import Intent, upgrade_key

    began = time.monotonic()
    shown = ""
    while True:
        processes = read_status(where)
        seen = progress(processes, monolith)
        rolled = {s: (Intent.from_json(etcd.get(upgrade_key(s))) or intent).step for s, intent in rolls.items()}
        line = f"{monolith}: " + (", ".join(f"{n} {s}" for s, n in sorted(seen.items())) or "no instances") + \
            "".join(f"; {s}: {step}" for s, step in sorted(rolled.items()))
        if line != shown:
            click.echo(line)
            shown = line
        if seen.get("crashlooping"):
            raise click.ClickException(f"{monolith}: an instance is crashlooping; `strangler status` names its log")
        if seen == ({"healthy": want} if want else {}) and all(step == "rolled" for step in rolled.values()):
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise click.ClickException(f"not there within {timeout:g}s; `strangler status` shows where it is")
        time.sleep(0.2)


def _scale_value(n: int, who: str) -> str:
    return json.dumps({"instances": n, "by": who, "at": time.time()})


@click.command()
@plan_option
@run_dir_option
@click.argument("backend", required=False)
@click.option("--window", default="10m", show_default=True, metavar="DURATION",
              help="How long to watch the monolith's requests in Traefik's metrics (30s, 10m, 1h).")
@click.option("--allow", type=click.IntRange(0, 1_000_000), default=0, show_default=True,
              help="Requests the monolith may still answer in the window (health checks sent through Traefik).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=300, show_default=True,
              help="Seconds to wait for the monolith to stop and the services to roll.")
def retire(plan_path: Path, run_dir: Path | None, backend: str | None, window: str, allow: int,
           timeout: float) -> None:
    """Stop the monolith for good once every endpoint is flipped: the last step of a migration.

    Refuses while the monolith answers any of the plan's endpoints or prefixes
    (the catch-all does not count). Otherwise it counts the monolith's requests
    in Traefik's metrics over --window (more than --allow refuses), verifies
    every linked service's tables, turns write-through and the followers off
    (the services' databases become the source of truth), drains and stops the
    monolith's instances and records the plan as done (`strangler status`).
    """
    from router import table
    from router.etcd import Etcd, EtcdError
    from strangler.promote.metrics import MetricsError, parse
    from strangler.promote.metrics import window as counted
    from strangler.stack.retire import (
        RETIRED_KEY,
        WRITE_THROUGH_OFF,
        health_endpoint,
        parse_window,
        read_metrics,
        read_retired,
        requests_besides,
        router_requests,
        served_by_monolith,
    )
    from strangler.stack.scale import scale_key
    from strangler.stack.upgrade import UpgradeRefused, upgrade_key

    plan = open_plan(plan_path)
    if backend is not None and backend != plan.monolith:
        raise click.BadParameter(f"{backend!r} is not the monolith ({plan.monolith}); a service is stopped "
                                 f"with `strangler scale {backend}=0`", param_hint="BACKEND")
    try:
        seconds = parse_window(window)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--window") from None
    where = (run_dir or plan.run_dir).resolve()
    plan = replace(plan, run_dir=where)
    state = _running_stack(where)
    etcd = Etcd(state["etcd"], timeout=5)
    monolith = plan.monolith
    health = health_endpoint(plan)
    who = table.current_user()
    try:
        record = read_retired(etcd)
        if record is not None:
            click.echo(f"{monolith} is already retired (by {record.get('by', '?')}); "
                       "`strangler unretire` brings it back")
            return
        routes, _ = table.load(etcd)
        served = served_by_monolith(routes.values(), health)
        if served:
            raise click.ClickException(
                f"{monolith} still serves {len(served)} endpoint(s)/prefix(es): {', '.join(served)}; "
                "flip them first (`strangler cutover --all`)")
        services = _linked_services(plan, etcd)
        rolls = {s: _roll(plan, etcd, where, s, WRITE_THROUGH_OFF, who, "standalone") for s in services}
    except UpgradeRefused as exc:
        raise click.ClickException(f"cannot turn write-through off: {exc}") from None
    except EtcdError as exc:
        raise click.ClickException(f"etcd at {state['etcd']} did not answer: {exc}") from None

    click.echo(f"counting {monolith}'s requests in Traefik's metrics for {window} "
               f"(health checks on {health} left out) ...")
    try:
        before = read_metrics(state["traefik_api"])
        time.sleep(seconds)  # the window itself: what is measured is what arrives meanwhile
        after = read_metrics(state["traefik_api"])
    except MetricsError as exc:
        raise click.ClickException(str(exc)) from None
    total = counted(parse(before), parse(after), monolith)
    seen = requests_besides(router_requests(before, monolith), router_requests(after, monolith), health.id)
    if total is None or seen is None:
        raise click.ClickException("Traefik restarted during the window; run `strangler retire` again")
    click.echo(f"{monolith}: {seen} request(s) in the last {window} besides health checks "
               f"({total.requests - seen} on {health}; --allow {allow})")
    if seen > allow:
        raise click.ClickException(f"{monolith} answered {seen} request(s) in the last {window} "
                                   f"(more than --allow {allow}); find who still calls it in the access log")

    verified = _verify(plan, services)
    summary = {"by": who, "at": time.time(), "window": window, "requests": seen,
               "verified": verified, "services": services}
    what = (f"retire {monolith}: {seen} request(s) in {window}; "
            f"{len(verified)} table(s) verified; write-through and followers off")
    puts = {scale_key(monolith): _scale_value(0, who),
            **{upgrade_key(s): intent.to_json() for s, intent in rolls.items()}}
    try:
        change = table.note(etcd, who=who, what=what, puts={**puts, RETIRED_KEY: json.dumps(summary)})
    except (EtcdError, table.ConcurrentChange) as exc:
        raise click.ClickException(f"not recorded: {exc}") from None
    click.echo(f"change {change.id}: {what}")
    took = _wait(where, etcd, monolith, 0, rolls, timeout)
    click.echo(f"{monolith} retired in {took:.1f}s; the services' databases are the source of truth")


def _verify(plan, services: list[str]) -> list[str]:  # noqa: ANN001
    """``migrate verify`` of every linked service: the tables that match; ClickException otherwise."""
    from datalink.tables import MigrateError, engines
    from strangler.migrate.cli import service_data
    from strangler.migrate.verify import verify_table

    ok, bad = [], []
    for service in services:
        try:
            source_url, target_url, tables = service_data(plan, service)
            with engines((source_url, plan.monolith), (target_url, service)) as (source, target):
                checks = [verify_table(source, target, name, (plan.monolith, service),
                                       identity=plan.identity(name)) for name in tables]
        except MigrateError as exc:
            raise click.ClickException(f"cannot verify {service}: {exc}") from None
        for check in checks:
            if check.ok:
                click.echo(f"{service}: {check.table} ok, {check.source_rows:,} rows")
                ok.append(f"{service}.{check.table}")
            else:
                bad.append(f"{service}.{check.table}")
    if bad:
        raise click.ClickException(f"{', '.join(bad)} differ between the monolith's database and the "
                                   "service's; `strangler migrate verify SERVICE` shows how")
    return ok


@click.command()
@plan_option
@run_dir_option
@click.option("--timeout", type=click.FloatRange(1, 3600), default=300, show_default=True,
              help="Seconds to wait for the monolith to be healthy and the services to roll.")
def unretire(plan_path: Path, run_dir: Path | None, timeout: float) -> None:
    """Bring a retired monolith back: re-link its data, start its instances, write-through on again.

    Refuses when its database no longer exists.
    """
    from datalink.tables import MigrateError
    from router import table
    from router.etcd import Etcd, EtcdError
    from strangler.stack.data import link_service
    from strangler.stack.retire import RETIRED_KEY, database_exists, read_retired
    from strangler.stack.scale import scale_key
    from strangler.stack.upgrade import UpgradeRefused, upgrade_key

    plan = open_plan(plan_path)
    where = (run_dir or plan.run_dir).resolve()
    plan = replace(plan, run_dir=where)
    state = _running_stack(where)
    etcd = Etcd(state["etcd"], timeout=5)
    monolith = plan.monolith
    who = table.current_user()
    try:
        if read_retired(etcd) is None:
            raise click.ClickException(f"{monolith} is not retired; nothing to bring back")
        gone = database_exists(plan.database_url(monolith))
        if gone:
            raise click.ClickException(f"cannot bring {monolith} back: {gone}")
        services = _linked_services(plan, etcd)
        for service in services:  # the monolith's database catches up on what the services wrote
            link_service(plan, etcd, service, click.echo)
        rolls = {s: _roll(plan, etcd, where, s, {}, who, "linked") for s in services}
        count = plan.backends[monolith].instances
        what = f"unretire {monolith}: {count} instance(s), data re-linked, write-through and followers on"
        puts = {scale_key(monolith): _scale_value(count, who),
                **{upgrade_key(s): intent.to_json() for s, intent in rolls.items()}}
        change = table.note(etcd, who=who, what=what, puts=puts, deletes=[RETIRED_KEY])
    except MigrateError as exc:
        raise click.ClickException(f"cannot re-link the data: {exc}") from None
    except UpgradeRefused as exc:
        raise click.ClickException(f"cannot turn write-through on: {exc}") from None
    except (EtcdError, table.ConcurrentChange) as exc:
        raise click.ClickException(f"etcd at {state['etcd']} did not answer: {exc}") from None
    click.echo(f"change {change.id}: {what}")
    took = _wait(where, etcd, monolith, count, rolls, timeout)
    click.echo(f"{monolith} is back in {took:.1f}s")
