"""Alembic environments, one folder per database (``migrations/<name>/``)."""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def script_location(name: str) -> str:
    """Return the alembic script directory of database *name* (e.g. ``"monolith"``)."""
    path = HERE / name
    if not (path / "env.py").exists():
        raise LookupError(f"no alembic environment for database {name!r} under {HERE}")
    return str(path)
