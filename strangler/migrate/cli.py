"""``strangler migrate``: schemas of every database, and moving a service's data out of the monolith."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from datalink.tables import MigrateError, display_url, engines
from strangler import options
from strangler.migrate import schema
from strangler.migrate.copy import plan_copy, run_copy
from strangler.migrate.sync import OVERLAP, Syncer, SyncResult, SyncState
from strangler.migrate.verify import verify_table
from strangler.plan import Plan
from strangler.plan.cli import pass_plan


def service_data(plan: Plan, service: str) -> tuple[str, str, list[str]]:
    """``(monolith URL, service URL, tables)`` for *service*; MigrateError if it owns no data."""
    if service not in plan.backends:
        raise MigrateError(f"unknown service {service!r}; services: {', '.join(plan.services)}")
    if service == plan.monolith:
        raise MigrateError(f"{service!r} is the monolith; name the service to move data to")
    backend = plan.backend(service)
    target = plan.database_url(service)
    if target is None or not backend.tables:
        raise MigrateError(
            f"service {service!r} owns no data (database and tables in [backends.{service}])"
        )
    source = plan.database_url(plan.monolith)
    if source is None:
        raise MigrateError(f"the monolith ({plan.monolith}) has no database in the plan")
    return source, target, list(backend.tables)


def state_path(plan: Plan, service: str, reverse: bool = False) -> Path:
    """Where the watermarks of *service*'s sync (one direction) are kept: ``<run_dir>/sync/``."""
    return plan.run_dir / "sync" / f"{service}-{'reverse' if reverse else 'forward'}.json"


MAX_MESSAGE = 200  # a revision's -m: its docstring's first line and (cut short) its file name


def _fail(exc: MigrateError) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def migrate() -> None:
    """Upgrade every database's schema; copy, sync and verify a service's data."""


@migrate.command()
@click.option("--db", "only", metavar="NAME", help="Only this backend's database.")
@click.argument("revision", default="head")
@pass_plan
def upgrade(plan: Plan, only: str | None, revision: str) -> None:
    """Upgrade the plan's databases (or --db NAME) to REVISION (default: head)."""
    try:
        for db in schema.databases(plan, only):
            schema.upgrade(db, revision)
            if not db.env:
                click.echo(f"{db.name}: no alembic environment, left alone ({display_url(db.url)})")
                continue
            click.echo(f"{db.name}: at {', '.join(schema.current(db)) or 'base'} ({display_url(db.url)})")
    except MigrateError as exc:
        raise _fail(exc) from None


@migrate.command()
@click.option("--db", "only", metavar="NAME", required=True, help="The backend whose database to downgrade.")
@click.argument("revision")
@pass_plan
def downgrade(plan: Plan, only: str, revision: str) -> None:
    """Downgrade one database to REVISION (base: drop every table of its environment)."""
    try:
        db = schema.databases(plan, only)[0]
        schema.downgrade(db, revision)
        click.echo(f"{db.name}: at {', '.join(schema.current(db)) or 'base'}")
    except MigrateError as exc:
        raise _fail(exc) from None


@migrate.command()
@click.option("--db", "only", metavar="NAME", required=True, help="The backend whose environment gets it.")
@click.option("-m", "--message", required=True, help="What the revision changes (its file name and docstring).")
@click.option("--autogenerate", is_flag=True,
              help="Fill it in from the models' difference with the database (at head first).")
@pass_plan
def revision(plan: Plan, only: str, message: str, autogenerate: bool) -> None:
    """Write a new revision script in one database's alembic environment (alembic revision)."""
    if not message.strip():
        raise click.BadParameter("give the revision a message", param_hint="-m")
    # the message lands inside the script's """docstring""": a quote or a backslash could end it
    # or make it an invalid escape, and every later migrate command would fail to load the script
    if len(message) > MAX_MESSAGE or not message.isprintable() or any(c in message for c in '"\\'):
        raise click.BadParameter(f"one line of at most {MAX_MESSAGE} characters without \" or \\, "
                                 "e.g. -m 'add books.isbn'", param_hint="-m")
    try:
        db = schema.databases(plan, only)[0]
    except MigrateError as exc:  # --db names no database of the plan: a usage error
        raise click.BadParameter(str(exc), param_hint="--db") from None
    try:
        for path in schema.revision(db, message, autogenerate):
            click.echo(f"{db.name}: wrote {path}")
    except MigrateError as exc:
        raise _fail(exc) from None


@migrate.command()
@click.option("--db", "only", metavar="NAME", help="Only this backend's database.")
@pass_plan
def current(plan: Plan, only: str | None) -> None:
    """Show the revision each database is at, and whether that is the newest."""
    try:
        for db in schema.databases(plan, only):
            at, heads = schema.current(db), schema.heads(db)
            note = ("head" if at and set(at) == set(heads) else f"newest is {', '.join(heads)}"
                    if heads else "no alembic environment: the app keeps its schema")
            click.echo(f"{db.name}: {', '.join(at) or 'base'} ({note})")
    except MigrateError as exc:
        raise _fail(exc) from None


@migrate.command()
@click.option("--db", "only", metavar="NAME", help="Only this backend's environment.")
@pass_plan
def history(plan: Plan, only: str | None) -> None:
    """List every revision of each database's alembic environment, newest first."""
    try:
        for db in schema.databases(plan, only):
            where = db.env if "/" in db.env else f"migrations/{db.env}/" if db.env else "no alembic environment"
            click.echo(f"{db.name} ({where}):")
            for rev in schema.history(db):
                head = " (head)" if rev.is_head else ""
                click.echo(f"  {rev.down_revision or '<base>'} -> {rev.revision}{head}, {rev.doc.splitlines()[0] if rev.doc else ''}")
    except MigrateError as exc:
        raise _fail(exc) from None


@migrate.command()
@click.argument("service")
@click.option("--chunk", type=options.CHUNK, default=5000, show_default=True, help="Rows per transaction.")
@pass_plan
def copy(plan: Plan, service: str, chunk: int) -> None:
    """Copy the tables SERVICE owns from the monolith's database into its own.

    Bulk, keeping ids; safe to re-run and to resume after a crash (it goes on
    from the target's largest id). Refuses, changing nothing, when schemas
    differ or the target has diverged.
    """
    try:
        source_url, target_url, tables = service_data(plan, service)
        with engines((source_url, plan.monolith), (target_url, service)) as (source, target):
            plans = plan_copy(source, target, tables, (plan.monolith, service),
                              identities=plan.identities(tables))
            for note in (note for planned in plans for note in planned.notes):
                click.echo(f"note: {note}")
            state = SyncState.load(state_path(plan, service))
            for name in tables:  # changes made from now on are sync's to carry
                state.start_at(name, int(time.time()) - OVERLAP)
            state.save()
            result = _copy_with_progress(source, target, plans, chunk)
    except MigrateError as exc:
        raise _fail(exc) from None
    parts = ", ".join(f"{t.table} {t.copied + t.refreshed:,}" for t in result.tables)
    click.echo(f"copied {result.rows:,} rows ({parts}) in {result.seconds:.1f} s: {result.rate:,.0f} rows/s")


def _copy_with_progress(source, target, plans, chunk):  # noqa: ANN001, ANN202
    console = Console(stderr=False)
    if not console.is_terminal:  # logs and pipes get a plain line per chunk
        seen: dict[str, int] = {}

        def plain(table: str, rows: int) -> None:
            seen[table] = seen.get(table, 0) + rows
            click.echo(f"{table}: {seen[table]:,} rows")
        return run_copy(source, target, plans, chunk, plain)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        tasks = {p.source.name: bar.add_task(p.source.name, total=p.to_copy + len(p.stale_ids))
                 for p in plans}
        return run_copy(source, target, plans, chunk, lambda t, n: bar.advance(tasks[t], n))


@migrate.command()
@click.argument("service")
@click.option("--follow", is_flag=True, help="Keep syncing until Ctrl-C, reporting the lag.")
@click.option("--reverse", is_flag=True, help="From the service's database back to the monolith's.")
@click.option("--interval", type=options.SYNC_INTERVAL, default=1.0, show_default=True,
              help="Seconds between passes with --follow.")
@click.option("--passes", type=options.PASSES, default=0,
              help="With --follow, stop after this many passes (0: never).")
@pass_plan
def sync(plan: Plan, service: str, follow: bool, reverse: bool, interval: float, passes: int) -> None:
    """Copy what changed (by updated_at and id) since the last sync, once or with --follow.

    Upserts by id; a row changed later on the receiving side is left alone.
    """
    try:
        monolith_url, service_url, tables = service_data(plan, service)
        ends = [(monolith_url, plan.monolith), (service_url, service)]
        (source_url, source_name), (target_url, target_name) = ends[::-1] if reverse else ends
        state = SyncState.load(state_path(plan, service, reverse))
        with Syncer(source_url, target_url, tables, state, (source_name, target_name),
                    identities=plan.identities(tables)) as syncer:
            if not follow:
                result = syncer.once()
                _report(result)
                clashes = sum(t.collisions for t in result.tables)
                if clashes:
                    raise MigrateError(
                        f"{clashes} row(s) collided: another row already holds their id in the "
                        f"{target_name} database; each side kept its own, the incoming one is in "
                        f"strangler_collisions there (strangler migrate verify {service} names the ids)")
                return
            try:
                syncer.follow(interval, max_passes=passes or None, on_pass=_report)
            except KeyboardInterrupt:
                click.echo("stopped")
    except MigrateError as exc:
        raise _fail(exc) from None


def _report(result: SyncResult) -> None:
    parts = ", ".join(
        f"{t.table} +{t.inserted} ~{t.updated}" + (f" (kept {t.kept_newer} newer)" if t.kept_newer else "")
        + (f" ({t.collisions} COLLIDED)" if t.collisions else "")
        for t in result.tables
    )
    click.echo(f"{time.strftime('%H:%M:%S', time.localtime(result.finished_at))} "
               f"synced {result.applied} rows ({parts}); lag {result.lag:.1f} s")


@migrate.command()
@click.argument("service")
@pass_plan
def verify(plan: Plan, service: str) -> None:
    """Compare SERVICE's tables in the monolith's database and its own: counts and checksums.

    Exits 1 naming every table that differs and a few of its ids.
    """
    try:
        source_url, target_url, tables = service_data(plan, service)
        with engines((source_url, plan.monolith), (target_url, service)) as (source, target):
            checks = [verify_table(source, target, name, (plan.monolith, service),
                                   identity=plan.identity(name)) for name in tables]
    except MigrateError as exc:
        raise _fail(exc) from None
    for check in checks:
        for note in check.notes:
            click.echo(f"{check.table}: note: {note}")
        if check.schema:
            click.echo(f"{check.table}: schemas differ: {check.schema}")
        elif check.collisions:
            shown = ", ".join(map(str, check.collisions[:20]))
            more = f" and {len(check.collisions) - 20} more" if len(check.collisions) > 20 else ""
            click.echo(f"{check.table}: COLLISIONS: {len(check.collisions):,} id(s) hold two different "
                       f"rows, ids {shown}{more} (the other row is kept in strangler_collisions; "
                       f"reconcile them by hand)")
        elif check.ok:
            click.echo(f"{check.table}: ok, {check.source_rows:,} rows, sha256 {check.source_sum[:16]}")
        else:
            click.echo(f"{check.table}: DIFFERS: {check.source_rows:,} vs {check.target_rows:,} rows, "
                       f"{check.differing:,} differing, e.g. ids {', '.join(map(str, check.sample_ids))}")
    bad = [c.table for c in checks if not c.ok]
    if bad:
        raise click.ClickException(f"{service}: {', '.join(bad)} differ from the monolith's")


def _check_url(name: str, url: str) -> None:
    """A ``--database NAME=URL`` SQLAlchemy can open: its form, and its driver installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url).get_dialect().import_dbapi()
    except ArgumentError:
        raise click.BadParameter(f"{name}={display_url(url)[:200]}: not a database URL "
                                 "(e.g. postgresql+psycopg2://user:password@host/db)",
                                 param_hint="--database") from None
    except ImportError as exc:  # a dialect or its driver that is not installed
        raise click.BadParameter(f"{name}={display_url(url)[:200]}: {exc}; name an installed driver, "
                                 "e.g. postgresql+psycopg2://", param_hint="--database") from None


def with_databases(plan: Plan, overrides: tuple[str, ...]) -> Plan:
    """*plan* with ``NAME=URL`` database overrides (a deployment's URLs instead of the plan's)."""
    backends = dict(plan.backends)
    for item in overrides:
        name, equals, url = item.partition("=")
        if not equals or not url:
            raise click.BadParameter(f"{item.split('=')[0]!r}: write NAME=URL", param_hint="--database")
        if name not in backends:
            raise click.BadParameter(f"{name!r} is not a backend of the plan", param_hint="--database")
        _check_url(name, url)
        # as given: the plan's {run_dir} / {name} placeholders are not a deployment's
        backends[name] = replace(backends[name], database=url.replace("{", "{{").replace("}", "}}"))
    return replace(plan, backends=backends)


@click.command()
@click.argument("services", nargs=-1, required=True, metavar="SERVICE...")
@click.option("--etcd", "etcd_url", envvar="STRANGLER_ETCD", metavar="URL", show_envvar=True,
              help="etcd's client URL (default: the plan's etcd_port).")
@click.option("--database", "databases", multiple=True, metavar="NAME=URL",
              envvar="STRANGLER_LINK_DATABASE", show_envvar=True,
              help="Backend NAME's database is at URL here, not the plan's (repeatable; "
                   "in the environment, space-separated).")
@pass_plan
def link(plan: Plan, services: tuple[str, ...], etcd_url: str | None, databases: tuple[str, ...]) -> None:
    """Link each SERVICE's data with the monolith's, where no `strangler up` does it (compose, servers).

    Upgrades the schemas, copies each SERVICE's tables out of the monolith's
    database (or, once linked, catches up both ways), records the link in
    etcd and gives each database its id lane: what `up` does before any
    backend starts. Run it before the backends start (a one-shot container),
    and start them with STRANGLER_WRITE_THROUGH naming each other's
    databases (docs/data-consistency.md), so both stay whole.
    """
    from router.etcd import Etcd, EtcdError
    from strangler.routing.cli import stack_url
    from strangler.stack.data import link_service
    from strangler.stack.state import read_state

    plan = with_databases(plan, databases)
    if read_state(plan.run_dir):
        raise click.ClickException(f"a local stack runs from {plan.run_dir}; `strangler up` links its "
                                   "services' data itself (down and up again to link a new one)")
    for service in services:
        try:
            service_data(plan, service)
        except MigrateError as exc:  # a SERVICE that is not one, or owns no data: a usage error
            raise click.BadParameter(str(exc), param_hint="SERVICE") from None
    try:
        etcd = Etcd(etcd_url or stack_url(plan, "etcd"))
        for name in dict.fromkeys((plan.monolith, *services)):
            schema.upgrade(schema.databases(plan, name)[0])
        for service in services:
            link_service(plan, etcd, service, click.echo)
            click.echo(f"{service}: linked with {plan.monolith}; each side inserts from its own id lane")
    except MigrateError as exc:
        raise _fail(exc) from None
    except (EtcdError, ValueError) as exc:
        raise click.ClickException(f"etcd at {etcd_url or 'the plan port'}: {exc}") from None
