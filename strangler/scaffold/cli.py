"""``strangler init`` and ``strangler new service``: write a project's first plan, and a service."""

from __future__ import annotations

import re
from pathlib import Path

import click
import tomlkit

from strangler.plan import check_plan, parse_plan_text
from strangler.plan.cli import plan_option, scan_monolith, write_atomically
from strangler.plan.scan import ScanError, ScannedEndpoint, load_factory, update_inventory
from strangler.scaffold.init import check_app_spec, check_name, choose_health, plan_text


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
@click.option("--app", "app_spec", required=True, metavar="MODULE:FACTORY",
              help="What builds your Flask app, e.g. myapp:create_app (or MODULE:APP).")
@click.option("--name", default="monolith", show_default=True, help="The monolith's backend name.")
@click.option("--force", is_flag=True, help="Overwrite an existing plan file.")
@plan_option
def init(app_spec: str, name: str, force: bool, plan_path: Path) -> None:
    """Write a first, commented strangler.toml for your Flask app, and scan its routes into it.

    The app runs untouched: its gunicorn command joins the service registry
    through router.gunicorn_conf. Run it in your project's folder (where
    MODULE imports from). Refuses to overwrite a plan unless --force.
    """
    try:
        check_app_spec(app_spec)
        check_name(name)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if plan_path.exists() and not force:
        raise Refused(f"{plan_path} exists; pass --force to overwrite it (or --plan OTHER.toml)")
    try:
        factory = load_factory(app_spec, plan_path.resolve().parent)
    except ScanError as exc:
        raise Refused(str(exc)) from None
    from flask import Flask

    scanned = scan_monolith(app_spec, plan_path)
    health = choose_health(scanned)
    doc = tomlkit.parse(plan_text(app_spec, name, health, is_factory=not isinstance(factory, Flask)))
    update_inventory(doc, scanned)
    text = tomlkit.dumps(doc)
    problems = check_plan(parse_plan_text(text, str(plan_path)))
    if problems:  # a bug of ours, not the user's: say so rather than write a broken plan
        raise click.ClickException(f"the plan init would write has a problem: {problems[0]}")
    write_atomically(plan_path, text)
    click.echo(f"wrote {plan_path}: monolith {name!r} ({app_spec}), {len(scanned)} endpoints, "
               f"health {health.path} ({health.why.split(';')[0]})")
    example, service = _example(scanned, health.path)
    click.echo("next:")
    click.echo("  strangler up --detach                  # your app behind Traefik, every request still on it")
    click.echo(f'  strangler new service {service} --endpoints "{example}"')
    click.echo(f'  strangler compare "{example}" --against {service}')

