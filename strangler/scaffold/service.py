"""``strangler new service``'s core: a service's files and its plan entry (pure, no I/O).

:func:`service_files` returns ``{relative path: text}`` for ``extracted/<name>/``
(factory, views answering 501 until written, gunicorn conf, wsgi) and, with
tables, ``migrations/<name>/`` (an alembic environment whose models are the
tables' columns when the monolith's database could be read).
:func:`plan_entry` is its ``[backends.<name>]`` table.

The service imports nothing of the toolkit but ``router`` (the registry
hooks), so it runs in any project where strangler is installed.
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import tomlkit
from tomlkit.items import Table

from strangler.plan.schema import Endpoint

_PARAM = re.compile(r"<(?:(path):)?([A-Za-z_]\w*)>")


class Column(NamedTuple):
    """One column of a table the service takes over, as SQLAlchemy code (``sa.Integer()``)."""

    name: str
    type_code: str
    primary_key: bool = False
    nullable: bool = True


class View(NamedTuple):
    """One view function of the scaffold: its name, rule, methods and the endpoints it stands for."""

    function: str
    rule: str
    methods: tuple[str, ...]
    params: tuple[str, ...]
    endpoints: tuple[str, ...]
    monolith_name: str | None


def _identifier(text: str) -> str:
    word = re.sub(r"\W+", "_", text).strip("_").lower() or "root"
    word = f"_{word}" if word[0].isdigit() else word
    return f"{word}_" if keyword.iskeyword(word) else word


def plan_views(endpoints: Sequence[Endpoint], names: Mapping[Endpoint, str]) -> list[View]:
    """PURE: one view per (path, monolith view name), its methods together; prefixes get a catch-all.

    A view is named like the monolith's (``books.get_book`` -> ``get_book``),
    else after its method and path (``get_api_books``); names never repeat.
    """
    grouped: dict[tuple[str, str | None], list[Endpoint]] = {}
    for ep in endpoints:
        grouped.setdefault((ep.path, names.get(ep)), []).append(ep)
    views, taken = [], set()
    for (path, name), eps in grouped.items():
        is_prefix = eps[0].is_prefix
        base = _identifier(name.rpartition(".")[2] if name else
                           f"{'all' if is_prefix else eps[0].method.lower()}_{path}")
        function, n = base, 2
        while function in taken:
            function, n = f"{base}_{n}", n + 1
        taken.add(function)
        if is_prefix:
            rule, methods, params = f"{path}<path:rest>", (), ("rest",)
        else:
            rule = path
            methods = tuple(ep.method for ep in eps)
            params = tuple(m[2] for m in _PARAM.finditer(path))
        views.append(View(function, rule, methods, params, tuple(str(ep) for ep in eps), name))
    return views


def _view_code(view: View) -> str:
    if view.methods:
        decorators = f'@bp.route("{view.rule}", methods={json.dumps(list(view.methods))})'
        args = ", ".join(view.params)
        what = " and ".join(view.endpoints)
    else:  # a prefix: every method, the prefix itself and everything under it
        prefix = view.rule.removesuffix("<path:rest>")
        decorators = (f'@bp.route("{prefix}", defaults={{"rest": ""}}, methods=ALL_METHODS)\n'
                      f'@bp.route("{view.rule}", methods=ALL_METHODS)')
        args = "rest"
        what = view.endpoints[0]
    today = f"The monolith's {view.monolith_name} answers it today. " if view.monolith_name else ""
    return f'''{decorators}
def {view.function}({args}):
    """{what}: not written yet, answers 501.

    {today}Write it, then compare it with the monolith's:
    strangler compare "{view.endpoints[0]}" --against {{service}}
    """
    return not_written("{what}")
'''


def views_text(name: str, views: Sequence[View]) -> str:
    """PURE: ``extracted/<name>/views.py``."""
    body = "\n\n".join(_view_code(v).replace("{service}", name) for v in views)
    return f'''"""The {name} service's endpoints. Each answers 501 until it is written."""

from flask import Blueprint, jsonify

bp = Blueprint("{name}", __name__)
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def not_written(endpoint):
    """The answer of an endpoint nobody has written yet: 501, naming it."""
    return jsonify(error="not implemented yet", endpoint=endpoint), 501


{body}'''


def _models_text(name: str, tables: Mapping[str, Sequence[Column]]) -> str:
    blocks = []
    for table, columns in tables.items():
        lines = [f'    sa.Column({json.dumps(c.name)}, sa.{c.type_code}'
                 + (", primary_key=True" if c.primary_key else "")
                 + ("" if c.nullable or c.primary_key else ", nullable=False") + "),"
                 for c in columns] or [
            '    sa.Column("id", sa.Integer(), primary_key=True),',
            "    # TODO: the monolith's columns, with the same names and types",
        ]
        blocks.append(f'{_identifier(table)} = sa.Table(\n    {json.dumps(table)},\n    metadata,\n'
                      + "\n".join(lines) + "\n)\n")
    return f'''"""The {name} service's tables, in its own database: the same names and columns as
the monolith's, so rows copy across by id (strangler migrate copy {name}).

After changing them: strangler migrate revision --db {name} -m "what changed" --autogenerate
"""

import sqlalchemy as sa

metadata = sa.MetaData()


''' + "\n\n".join(blocks)


def _env_text(name: str) -> str:
    return f'''"""Alembic environment of the {name} service's database (strangler migrate ... --db {name}).

The URL comes from strangler (``config.attributes["url"]``) or DATABASE_URL.
"""

import importlib.util
import os
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool

# the models by file, so no other package named like this project's folders gets in the way
MODELS = Path(__file__).resolve().parents[2] / "extracted" / "{name}" / "models.py"
_spec = importlib.util.spec_from_file_location("{name}_models", MODELS)
_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_models)

config = context.config
url = config.attributes.get("url") or os.environ["DATABASE_URL"]

if context.is_offline_mode():
    context.configure(url=url, target_metadata=_models.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=_models.metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
'''


_MAKO = '''"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade():
    ${upgrades if upgrades else "pass"}


def downgrade():
    ${downgrades if downgrades else "pass"}
'''


def _gunicorn_text(name: str, migrate: bool) -> str:
    hook = f'''

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations" / "{name}"


def on_starting(server):
    """In the master, before any worker forks: bring the service's database to head."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        return
    from alembic import command
    from alembic.config import Config

    from datalink.locks import migration_lock

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    # one migration at a time across instances and hosts (strangler migrate takes it too):
    # in the database on a server, beside the file on SQLite
    with migration_lock(url, name=str(MIGRATIONS)):
        command.upgrade(config, "head")
''' if migrate else ""
    imports = "import os\nfrom pathlib import Path\n\n" if migrate else ""
    return f'''"""Gunicorn settings of the {name} service:

    gunicorn -c extracted/{name}/gunicorn_conf.py --bind 127.0.0.1:5001 extracted.{name}.wsgi:app

router.gunicorn_conf's: gthread worker, the master joins the service registry
when STRANGLER_ETCD is set (strangler up sets it) and leaves it on exit.
"""

{imports}from router.gunicorn_conf import *  # noqa: F403 (bind, workers, threads, registry hooks)
{hook}'''


def service_files(name: str, views: Sequence[View], tables: Mapping[str, Sequence[Column]] | None = None,
                  ) -> dict[str, str]:
    """PURE: ``{relative path: text}`` of a new service (and its migrations, with tables)."""
    tables = tables or {}
    package = f"extracted/{name}"
    files = {
        f"{package}/__init__.py": f'''"""The {name} service, carved out of the monolith with `strangler new service`.

Its endpoints are in views.py (501 until written); /healthz is its health check.
"""

import os

from flask import Flask, jsonify


def create_app(config=None):
    """Build the {name} service; ``config`` (a mapping) wins over the environment."""
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY=os.environ.get("SECRET_KEY", "dev"),
                            DATABASE_URL=os.environ.get("DATABASE_URL"))
    app.config.from_mapping(config or {{}})
    from .views import bp

    app.register_blueprint(bp)

    @app.get("/healthz")
    def healthz():
        """The health check the registry and Traefik use; anyone may call it."""
        return jsonify(status="ok", service="{name}")

    return app
''',
        f"{package}/views.py": views_text(name, views),
        f"{package}/wsgi.py": f'"""WSGI entry point: ``extracted.{name}.wsgi:app``."""\n\n'
                              f"from extracted.{name} import create_app\n\napp = create_app()\n",
        f"{package}/gunicorn_conf.py": _gunicorn_text(name, bool(tables)),
    }
    if tables:
        files[f"{package}/models.py"] = _models_text(name, tables)
        files[f"migrations/{name}/env.py"] = _env_text(name)
        files[f"migrations/{name}/script.py.mako"] = _MAKO
        files[f"migrations/{name}/versions/.keep"] = ""
    return files


def plan_entry(name: str, endpoints: Sequence[Endpoint], tables: Sequence[str]) -> Table:
    """PURE: the service's ``[backends.<name>]`` table, with a comment saying how it was made."""
    table = tomlkit.table()
    table.add(tomlkit.comment(f"made by `strangler new service {name}`: extracted/{name}/"))
    table["command"] = (f"gunicorn -c extracted/{name}/gunicorn_conf.py --bind {{host}}:{{port}} "
                        f"extracted.{name}.wsgi:app")
    table["health"] = "/healthz"
    if tables:
        table["database"] = f"sqlite:///{{run_dir}}/data/{name}.sqlite"
        table["migrations"] = f"migrations/{name}"
        table["tables"] = list(tables)
    table["endpoints"] = [str(ep) for ep in endpoints]
    table.add(tomlkit.nl())
    return table
