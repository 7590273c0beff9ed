"""``strangler init`` and ``strangler new service``: write a project's first plan, and a service."""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from pathlib import Path

import click
import tomlkit

from strangler.options import LazyGroup
from strangler.plan import (
    Endpoint,
    Plan,
    PlanError,
    check_plan,
    parse_endpoint_spec,
    parse_plan_text,
)
from strangler.plan.cli import open_plan, plan_option, scan_monolith, write_atomically
from strangler.plan.scan import ScanError, ScannedEndpoint, load_factory, update_inventory
from strangler.scaffold.init import check_app_spec, check_name, choose_health, plan_text
from strangler.scaffold.service import Column, plan_entry, plan_views, service_files

TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class Refused(click.ClickException):
    """Bad input or a file that would be overwritten: one line, exit status 2, nothing written."""

    exit_code = 2


def _example(scanned: list[ScannedEndpoint], health: str) -> tuple[str, str]:
    """``(endpoint, service name)`` for the next steps: a plain GET, an API one if there is one."""
    gets = [s.endpoint for s in scanned if s.endpoint.method == "GET"
            and s.endpoint.path != health and "<" not in s.endpoint.path]
    api = [ep for ep in gets if ep.path.startswith("/api/")]
    chosen = (api or gets or [None])[0]
    if chosen is None:
        return "GET /", "first"
    words = [w for w in chosen.path.split("/") if w and w != "api"]
    name = re.sub(r"[^a-z0-9_-]", "", words[0].lower()) if words else ""
    return str(chosen), name if re.fullmatch(r"[a-z][a-z0-9_-]*", name) else "first"


@click.command()
@click.option("--app", "app", required=True, metavar="MODULE:FACTORY",
              help="What builds your Flask app, e.g. myapp:create_app (or MODULE:APP).")
@click.option("--name", default="monolith", show_default=True, help="The monolith's backend name.")
@click.option("--force", is_flag=True, help="Overwrite an existing plan file.")
@plan_option
def init(app: str, name: str, force: bool, plan_path: Path) -> None:
    """Write a first, commented strangler.toml for your Flask app, and scan its routes into it.

    The app runs untouched: its gunicorn command joins the service registry
    through router.gunicorn_conf. Run it in your project's folder (where
    MODULE imports from). Refuses to overwrite a plan unless --force.
    """
    try:
        check_app_spec(app)
        check_name(name)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if plan_path.exists() and not force:
        raise Refused(f"{plan_path} exists; pass --force to overwrite it (or --plan OTHER.toml)")
    try:
        factory = load_factory(app, plan_path.resolve().parent)
    except ScanError as exc:
        raise Refused(str(exc)) from None
    from flask import Flask

    try:
        scanned = scan_monolith(app, plan_path)
    except click.ClickException as exc:  # --app names no Flask app, or one that fails to build
        raise Refused(exc.message) from None
    health = choose_health(scanned)
    doc = tomlkit.parse(plan_text(app, name, health, is_factory=not isinstance(factory, Flask)))
    update_inventory(doc, scanned)
    text = tomlkit.dumps(doc)
    problems = check_plan(parse_plan_text(text, str(plan_path)))
    if problems:  # a bug of ours, not the user's: say so rather than write a broken plan
        raise click.ClickException(f"the plan init would write has a problem: {problems[0]}")
    write_atomically(plan_path, text)
    click.echo(f"wrote {plan_path}: monolith {name!r} ({app}), {len(scanned)} endpoints, "
               f"health {health.path} ({health.why.split(';')[0]})")
    example, service = _example(scanned, health.path)
    click.echo("next:")
    click.echo("  strangler up --detach                  # your app behind Traefik, every request still on it")
    click.echo(f'  strangler new service {service} --endpoints "{example}"')
    click.echo(f'  strangler compare "{example}" --against {service}')


@click.group(cls=LazyGroup, commands={"service": "strangler.scaffold.cli:new_service"})
def new() -> None:
    """Add a part to the project: a service (code, migrations, plan entry)."""


def _split(values: tuple[str, ...]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _resolve(plan: Plan, specs: list[str]) -> list[Endpoint]:
    """Each endpoint as the plan knows it (a spec or the monolith's view name), else as written."""
    found = []
    for spec in specs:
        try:
            found.append(plan.endpoint(spec))
        except PlanError as exc:
            try:  # not the monolith's: under new-only, or a prefix; plan check has the last word
                found.append(parse_endpoint_spec(spec))
            except ValueError:
                raise Refused(str(exc)) from None
    return list(dict.fromkeys(found))


def _columns(plan: Plan, tables: list[str]) -> tuple[dict[str, list[Column]], str]:
    """The tables' columns read from the monolith's database, or empty stubs and why."""
    url = plan.database_url(plan.monolith)
    if url is None:
        return {t: [] for t in tables}, "the plan gives the monolith no database"
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    from datalink.tables import display_url

    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine, only=tables)
    except (SQLAlchemyError, OSError) as exc:
        return {t: [] for t in tables}, f"cannot read them at {display_url(url)}: {str(exc).splitlines()[0]}"
    finally:
        engine.dispose()

    def code(column: sa.Column) -> str:
        try:
            text = repr(column.type.as_generic())
        except NotImplementedError:
            text = "Text()"
        return text if hasattr(sa, text.partition("(")[0]) else "Text()"

    return {t: [Column(c.name, code(c), c.primary_key, bool(c.nullable)) for c in meta.tables[t].columns]
            for t in tables}, ""


def _write_all(root: Path, files: dict[str, str], then: Callable[[], None]) -> None:
    """Write ``files`` under ``root``, then call ``then``; if anything fails (OSError), every file
    and folder made here is removed again before the error goes on: all or nothing."""
    made: list[Path] = []
    try:
        for relative, content in files.items():
            target = root / relative
            missing = [d for d in (target.parent, *target.parent.parents) if d.is_relative_to(root)
                       and not d.exists()]
            for folder in reversed(missing):
                folder.mkdir()
                made.append(folder)
            with open(target, "x", encoding="utf-8") as handle:  # never over an existing file
                made.append(target)
                handle.write(content)
        then()
    except BaseException:
        for path in reversed(made):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        raise


@click.command("service")
@click.argument("name")
@click.argument("more", nargs=-1, metavar="[ENDPOINT]...")
@click.option("--endpoints", "endpoints", multiple=True, required=True, metavar='"GET /path"',
              help="An endpoint the service will own (repeatable, or comma-separated; the monolith's "
                   "view name works too). More endpoints may follow as arguments.")
@click.option("--tables", "tables", multiple=True, metavar="TABLE",
              help="A table it takes over from the monolith's database (repeatable or comma-separated): "
                   "adds its own database, models and migrations/NAME/.")
@plan_option
def new_service(name: str, more: tuple[str, ...], endpoints: tuple[str, ...],
                tables: tuple[str, ...], plan_path: Path) -> None:
    """Scaffold service NAME: extracted/NAME/ (factory, views answering 501, gunicorn conf, wsgi),
    migrations/NAME/ with --tables, and its [backends.NAME] entry in the plan.

    Example: strangler new service books --endpoints "GET /api/books" "GET /api/books/<id>"
    """
    try:
        check_name(name)
    except ValueError as exc:
        raise Refused(str(exc).replace("--name", "NAME")) from None
    if not name.isidentifier() or keyword.iskeyword(name):
        # extracted.NAME.wsgi:app is what gunicorn imports: books-api or class could never start
        raise Refused(f"NAME {name!r}: the service is the Python package extracted.{name}; use letters, "
                      f"digits and _ only, not a Python keyword (e.g. {name.replace('-', '_')}_svc)")
    plan = open_plan(plan_path)
    if name in plan.backends:
        raise Refused(f"the plan already has a backend {name!r}; pick another NAME")
    root = plan_path.resolve().parent
    owned = _resolve(plan, _split(endpoints) + list(more))
    taken = _split(tables)
    for table in taken:  # it becomes a name in models.py and in the plan
        if not TABLE_NAME.fullmatch(table):
            raise Refused(f"--tables {table[:80]!r}: a table name is letters, digits and _, "
                          "starting with a letter or _, at most 63 characters")
    if taken and plan.database_url(plan.monolith) is None:
        raise Refused(f"--tables: the plan gives the monolith no database to take them from; add "
                      f'database = "..." to [backends.{plan.monolith}] first')
    written = [f"extracted/{name}"] + ([f"migrations/{name}"] if taken else [])
    for folder in written:
        if (root / folder).exists():
            raise Refused(f"{root / folder} exists; remove it or pick another NAME")
    doc = tomlkit.parse(plan_path.read_text(encoding="utf-8"))
    doc["backends"][name] = plan_entry(name, owned, taken)
    text = tomlkit.dumps(doc)
    problems = check_plan(parse_plan_text(text, str(plan_path)))
    if problems:
        more_problems = f" ({len(problems) - 1} more)" if len(problems) > 1 else ""
        raise Refused(f"the service would break the plan: {problems[0]}{more_problems}")
    columns, why = _columns(plan, taken) if taken else ({}, "")
    names = {e.endpoint: e.name for e in plan.inventory if e.name}
    files = service_files(name, plan_views(owned, names), columns)
    if not (root / "extracted").exists():  # a project of its own: extracted/ is its package
        files["extracted/__init__.py"] = '"""The services carved out of the monolith."""\n'
    try:
        _write_all(root, files, lambda: write_atomically(plan_path, text))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise Refused(f"cannot write{where}: {exc.strerror or exc}; nothing was written") from None
    click.echo(f"wrote {', '.join(f + '/' for f in written)} and [backends.{name}] in {plan_path} "
               f"({len(owned)} endpoint(s), answering 501 until written)")
    if why:
        click.echo(f"note: models.py has placeholder columns ({why}); fill them in")
    for table, cols in columns.items():
        if cols and "updated_at" not in {c.name for c in cols}:
            click.echo(f"note: {table} has no updated_at column: `strangler up` keeps linked tables "
                       "in sync by it, so add one to both sides first (docs/data-consistency.md)")
    if taken:
        click.echo(f'  strangler migrate revision --db {name} -m "initial" --autogenerate')
    click.echo(f"next: write extracted/{name}/views.py, then")
    click.echo("  strangler up --detach                  # (down first if a stack runs) starts it too")
    click.echo(f'  strangler compare "{owned[0]}" --against {name}')
    click.echo(f"  strangler flip --service {name} --to {name}")
