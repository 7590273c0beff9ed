"""``strangler init``'s core: the first plan for any Flask app, as commented TOML text (pure).

The monolith runs untouched under ``router.gunicorn_conf``, which joins the
service registry from the master; its health path is the app's own health
endpoint when it has one, else the page :func:`choose_health` documents.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from strangler.plan.scan import ScannedEndpoint
from strangler.plan.schema import STACK_DEFAULTS

# An app's own health endpoint, if it has one of these (checked in this order).
HEALTH_PATHS = ("/healthz", "/health", "/livez", "/_health", "/ping", "/status")
_APP_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
MAX_NAME = 63  # a folder, a package and a Traefik service are named after it


class Health(NamedTuple):
    """The health-check path chosen for the monolith, and why (a comment in the plan)."""

    path: str
    why: str


def check_app_spec(spec: str) -> str:
    """``"module:factory"`` as given; ValueError saying what to write otherwise."""
    if not _APP_SPEC.fullmatch(spec):
        raise ValueError(f'--app {spec!r}: write MODULE:FACTORY, e.g. "myapp:create_app"')
    return spec


def check_name(name: str) -> str:
    """A backend name as the plan allows it; ValueError otherwise."""
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise ValueError(f"--name {name[:80]!r}: use lower-case letters, digits, - and _, starting with a "
                         f"letter, at most {MAX_NAME} characters")
    return name


def choose_health(scanned: Sequence[ScannedEndpoint]) -> Health:
    """The monolith's health path: its own health endpoint, else ``/``, else its first plain GET page.

    Only ``GET`` endpoints without placeholders qualify. Traefik counts an
    answer below 400 as healthy (a login redirect is fine); ``strangler up``
    follows redirects and wants a 2xx at the end.
    """
    plain = [s.endpoint.path for s in scanned if s.endpoint.method == "GET" and "<" not in s.endpoint.path]
    for path in HEALTH_PATHS:
        if path in plain:
            return Health(path, "the app's own health endpoint")
    if "/" in plain:
        return Health("/", "the app has no health endpoint; its home page stands in (any answer "
                           "below 400 is healthy). Point it at a cheap page, or add one.")
    if plain:
        return Health(plain[0], "the app has no health endpoint and no home page; its first plain "
                                "GET page stands in. Point it at a cheap page, or add one.")
    return Health("/", "the app has no GET page without parameters; add a health endpoint and "
                       "name it here, or `strangler up` will wait for / in vain.")


def gunicorn_target(spec: str, is_factory: bool) -> str:
    """What gunicorn loads: ``module:factory()`` calls a factory, ``module:app`` takes an app."""
    return f"{spec}()" if is_factory else spec


def plan_text(spec: str, name: str, health: Health, is_factory: bool = True) -> str:
    """The commented ``strangler.toml`` ``strangler init`` writes, before scan adds [[endpoints]]."""
    ports = "\n".join(f"{key} = {value}" for key, value in STACK_DEFAULTS.items())
    why = "\n".join(f"# {line}" for line in _wrap(f"health: {health.why}"))
    return f'''# The strangler plan for {spec}: which backend will serve each endpoint, how to
# start every backend, and how answers are compared. Written by `strangler init`;
# edit it freely (`strangler scan` keeps your edits and comments). Every key:
# docs/plan.md of the strangler project. Check it with `strangler plan check`.

[strangler]
strategy = "incremental"   # new-only | incremental | big-bang
run_dir = ".strangler"     # pid files, logs, the stack's own data (relative to this file)
monolith = "{name}"
# Generated once per run dir by `strangler up` and given to every backend in its
# environment, so a session cookie one backend signs is valid on all. Your app
# must read SECRET_KEY from the environment for that (Flask's session key).
secrets = ["SECRET_KEY"]

[stack]                    # local ports, all on 127.0.0.1 (0 = any free port)
{ports}

[backends.{name}]
# Your app, untouched: router.gunicorn_conf joins the service registry from the
# gunicorn master (gthread worker; STRANGLER_WORKERS and STRANGLER_THREADS tune it).
command = "gunicorn -c python:router.gunicorn_conf --bind {{host}}:{{port}} '{gunicorn_target(spec, is_factory)}'"
{why}
health = "{health.path}"
app = "{spec}"   # what `strangler scan` builds to read the routes
# Its database, once services take tables from it (strangler migrate copy, data
# links): a SQLAlchemy URL, e.g. "sqlite:////abs/path/app.sqlite".
# database = "sqlite:///..."
# Its schema is the app's own business: no alembic environment, so `strangler
# migrate` and `up` never touch it. Name a folder holding alembic's env.py if it has one.
migrations = ""

# Services: `strangler new service NAME --endpoints "GET /path" ...` adds one.
'''


def _wrap(text: str, width: int = 78) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines
