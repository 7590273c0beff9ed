"""``strangler scan`` and ``strangler plan check``: the plan file from the command line.

Other commands that need the plan use :func:`plan_option` (adds ``--plan``,
env ``STRANGLER_PLAN``, default ``strangler.toml``) and :func:`open_plan`, or
:func:`pass_plan`, which hands the command a checked :class:`Plan`.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from strangler.options import LazyGroup
from strangler.plan import Plan, PlanError, check_plan, load_plan, parse_plan_text, read_plan_data

if TYPE_CHECKING:
    import tomlkit

    from strangler.plan.scan import InventoryChange, ScannedEndpoint

PLAN_ENVVAR = "STRANGLER_PLAN"


def plan_option(command: Callable) -> Callable:
    """Add ``--plan PATH`` (env STRANGLER_PLAN, default strangler.toml) as ``plan_path``."""
    return click.option(
        "--plan",
        "plan_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default="strangler.toml",
        envvar=PLAN_ENVVAR,
        show_default=True,
        show_envvar=True,
        help="The plan file.",
    )(command)


def open_plan(path: Path) -> Plan:
    """Load and check the plan at ``path``; ClickException with one line if it is unusable."""
    try:
        return load_plan(path)
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None


def pass_plan(command: Callable) -> Callable:
    """Decorator: add ``--plan`` and call the command with ``plan=<checked Plan>``."""

    @functools.wraps(command)
    def wrapper(*args: Any, plan_path: Path, **kwargs: Any) -> Any:
        return command(*args, plan=open_plan(plan_path), **kwargs)

    return plan_option(wrapper)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename, so a crash never leaves half a plan."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _app_spec(doc: tomlkit.TOMLDocument, path: Path) -> str:
    """The monolith's ``app`` from the raw document (scan must work on a plan that fails check)."""
    head = doc.get("strangler", {})
    monolith = head.get("monolith", "monolith") if isinstance(head, Mapping) else "monolith"
    backend = doc.get("backends", {}).get(monolith) if isinstance(doc.get("backends"), Mapping) else None
    spec = backend.get("app") if isinstance(backend, Mapping) else None
    if not isinstance(spec, str):
        raise click.ClickException(
            f'{path}: backends.{monolith}.app is missing; add app = "module:factory", '
            'e.g. "monolith:create_app"'
        )
    return str(spec)


def _scan_into(doc: tomlkit.TOMLDocument, path: Path) -> InventoryChange:
    from strangler.plan.scan import update_inventory

    return update_inventory(doc, scan_monolith(_app_spec(doc, path), path))


def scan_monolith(spec: str, path: Path) -> list[ScannedEndpoint]:
    """The endpoints of the app ``spec`` names, built on a throw-away database beside plan ``path``.

    ClickException (one line) when the app cannot be imported or built.
    """
    # The scanner loads only for scan: every routing command imports this
    # module for --plan, and must not pay for it at start-up.
    from strangler.plan.scan import ScanError, create_scan_app, scan_app

    with tempfile.TemporaryDirectory(prefix="strangler-scan-", ignore_cleanup_errors=True) as tmp:
        try:
            app = create_scan_app(spec, Path(tmp), search_path=path.resolve().parent)
        except ScanError as exc:
            raise click.ClickException(f"{path}: {exc}") from None
        except Exception as exc:  # the factory is someone else's code: report it in one line
            raise click.ClickException(
                f'{path}: app "{spec}" failed to start: {type(exc).__name__}: {exc}'
            ) from None
        return scan_app(app)


@click.command()
@plan_option
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
def scan(plan_path: Path, dry_run: bool) -> None:
    """Scan the monolith's routes into the plan's [[endpoints]] inventory.

    Builds the monolith app (backends.<monolith>.app) on a throw-away
    database, adds endpoints that are new, marks vanished ones gone = true
    (never deletes them) and keeps comments and hand edits. The file is
    replaced atomically, and only if something changed.
    """
    try:
        text = plan_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise click.ClickException(f"{plan_path}: no such plan file (pass --plan or set {PLAN_ENVVAR})") from None
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise click.ClickException(f"{plan_path}: not valid TOML: {exc}") from None
    change = _scan_into(doc, plan_path)
    for line in change.lines():
        click.echo(line)
    if not change.changed:
        click.echo(f"{plan_path}: inventory up to date")
        return
    if dry_run:
        click.echo(f"{plan_path}: dry run, not written")
        return
    new_text = tomlkit.dumps(doc)
    write_atomically(plan_path, new_text)
    click.echo(
        f"{plan_path}: {len(change.added)} added, {len(change.gone)} marked gone, "
        f"{len(change.back)} back, {len(change.renamed)} renamed"
    )
    problems = check_plan(parse_plan_text(new_text, str(plan_path)))
    if problems:
        click.echo(f"note: {len(problems)} problem(s) remain; run strangler plan check")


@click.group(cls=LazyGroup, commands={"check": "strangler.plan.cli:check",
                                       "apply": "strangler.routing.cli:apply_"})
def plan() -> None:
    """Check the plan file strangler.toml, and apply it to the routing table."""


@click.command()
@plan_option
def check(plan_path: Path) -> None:
    """Check the plan file: print every problem with its key path, exit 1 if there are any."""
    try:
        data = read_plan_data(plan_path)
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None
    problems = check_plan(data)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        raise click.ClickException(f"{plan_path}: {len(problems)} problem(s)")
    checked = Plan.from_data(data, plan_path.resolve())
    click.echo(
        f"plan OK: {len(checked.endpoints())} endpoints, {len(checked.backends)} backends, "
        f"strategy {checked.strategy}"
    )
