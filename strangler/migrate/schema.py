"""Schemas of every database the plan names, each with its own alembic environment.

The monolith's database uses ``migrations/monolith/``; each backend with a
``database`` uses ``migrations/<backend name>/``. These functions take a
:class:`Database` and raise :class:`MigrateError` with one line (no
password, no traceback) for an unreachable database or an unknown revision.
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from datalink.locks import LockTimeout, migration_lock
from datalink.tables import MigrateError, display_url, first_line, open_engine
from migrations import alembic_config, script_location
from strangler.plan import Plan


@dataclass(frozen=True)
class Database:
    """One database of the plan: its backend's name, alembic environment and URL."""

    name: str
    env: str
    url: str


class Revision(NamedTuple):
    """One script of an environment's history, newest first."""

    revision: str
    down_revision: str | None
    doc: str
    is_head: bool


def databases(plan: Plan, only: str | None = None) -> list[Database]:
    """The plan's databases: the monolith's (env ``monolith``), then each service's with a database.

    *only* picks one by backend name; MigrateError if it is unknown or has
    no database.
    """
    if only is not None:
        if only not in plan.backends:
            known = ", ".join(b for b in plan.backends if plan.database_url(b))
            raise MigrateError(f"unknown database {only!r}; the plan's databases: {known}")
        if plan.database_url(only) is None:
            raise MigrateError(
                f"backend {only!r} has no database in the plan; add database = \"...\" "
                f"to [backends.{only}]"
            )
        names = [only]
    else:
        names = [plan.monolith] + [s for s in plan.services if plan.database_url(s)]
    found = []
    for name in names:
        url = plan.database_url(name)
        if url is None:
            raise MigrateError(f"the monolith ({name}) has no database in the plan; add database = \"...\"")
        env = plan.migrations(name)
        if env and not (Path(env) / "env.py").exists():
            try:
                script_location(env)
            except LookupError:
                raise MigrateError(f"no alembic environment {env!r} for database {name!r}; set "
                                   f"migrations = \"path/to/alembic\" in [backends.{name}]") from None
        found.append(Database(name, env, url))
    return found


def _run(db: Database, action, *args, locked: bool = False) -> None:  # noqa: ANN001
    engine = open_engine(db.url, db.name, must_exist=False)
    engine.dispose()
    try:
        # the apps migrate on start under the same lock: never two migrations at once
        with migration_lock(db.url, name=db.env) if locked else contextlib.nullcontext():
            action(alembic_config(db.url, db.env), *args)
    except LockTimeout as exc:
        raise MigrateError(f"{db.name}: {exc}") from None
    except CommandError as exc:
        raise MigrateError(f"{db.name}: {first_line(exc)} (see strangler migrate history)") from None
    except (OperationalError, DBAPIError) as exc:
        raise MigrateError(
            f"{db.name} at {display_url(db.url)}: {first_line(exc)}"
        ) from None
    except Exception as exc:  # the environment's own code (env.py, the models it loads) failed
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise MigrateError(
            f"{db.name}: its alembic environment failed: {type(exc).__name__}: {first_line(exc)} "
            f"({where.filename}:{where.lineno})"
        ) from None


def _needs_env(db: Database) -> None:
    if not db.env:
        raise MigrateError(f"{db.name}'s database has no alembic environment in the plan "
                           f"(migrations = \"\"); the app keeps its schema itself")


def upgrade(db: Database, revision: str = "head") -> None:
    """Upgrade *db* to *revision* (default: the newest); nothing for a database without alembic."""
    if not db.env:
        return
    _check_revision(db, revision)
    _run(db, command.upgrade, revision, locked=True)


def downgrade(db: Database, revision: str) -> None:
    """Downgrade *db* to *revision* (``base`` removes every table the environment made)."""
    _needs_env(db)
    _check_revision(db, revision)
    _run(db, command.downgrade, revision, locked=True)


def revision(db: Database, message: str, autogenerate: bool = False) -> list[str]:
    """Write a new revision script in *db*'s environment (alembic's own ``revision``); its paths.

    With *autogenerate* alembic compares the environment's models with the
    database, which must be at head first (MigrateError says so otherwise).
    """
    _needs_env(db)
    if autogenerate:
        at, newest = current(db), heads(db)
        if set(at) != set(newest):
            raise MigrateError(f"{db.name} is at {', '.join(at) or 'base'}, not at head "
                               f"({', '.join(newest)}); run strangler migrate upgrade --db {db.name} first")
    made: list[str] = []

    def write(config, *args) -> None:  # noqa: ANN001
        scripts = command.revision(config, message=message, autogenerate=autogenerate)
        for script in scripts if isinstance(scripts, list) else [scripts]:
            if script is not None:
                made.append(script.path)

    _run(db, write)
    return made


def _check_revision(db: Database, revision: str) -> None:
    # checked before touching the database, so a typo never half-runs anything
    if revision in ("head", "heads", "base") or "+" in revision or "-" in revision:
        return
    script = ScriptDirectory.from_config(alembic_config(db.url, db.env))
    try:
        found = script.get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        known = ", ".join(r.revision for r in script.walk_revisions())
        raise MigrateError(f"{db.name}: unknown revision {revision!r}; known: {known}")


def current(db: Database) -> tuple[str, ...]:
    """The revisions *db* is at (empty for a database alembic never touched, or no SQLite file yet)."""
    parsed = make_url(db.url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        return ()
    engine = open_engine(db.url, db.name)
    try:
        with engine.connect() as connection:
            return tuple(MigrationContext.configure(connection).get_current_heads())
    except (OperationalError, DBAPIError) as exc:
        raise MigrateError(f"{db.name} at {display_url(db.url)}: {first_line(exc)}") from None
    finally:
        engine.dispose()


def heads(db: Database) -> tuple[str, ...]:
    """The newest revisions of *db*'s environment (none without one)."""
    if not db.env:
        return ()
    return tuple(ScriptDirectory.from_config(alembic_config(db.url, db.env)).get_heads())


def history(db: Database) -> list[Revision]:
    """Every revision of *db*'s environment, newest first (reads scripts only, not the database)."""
    if not db.env:
        return []
    script = ScriptDirectory.from_config(alembic_config(db.url, db.env))
    tops = set(script.get_heads())
    return [
        Revision(r.revision, r.down_revision if isinstance(r.down_revision, str | None)
                 else ",".join(r.down_revision), (r.doc or "").strip(), r.revision in tops)
        for r in script.walk_revisions()
    ]
