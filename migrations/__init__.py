"""Alembic environments, one folder per database (``migrations/<name>/``).

Imports nothing of the project: the apps (migrating on start) and the
toolkit (``strangler migrate``) both build their alembic configuration here.
"""

from pathlib import Path

from alembic.config import Config as AlembicConfig

HERE = Path(__file__).resolve().parent


def script_location(name: str) -> str:
    """Return the alembic script directory of database *name* (e.g. ``"monolith"``)."""
    path = HERE / name
    if not (path / "env.py").exists():
        raise LookupError(f"no alembic environment for database {name!r} under {HERE}")
    return str(path)


def alembic_config(url: str, location: str = "monolith") -> AlembicConfig:
    """An alembic config for *url* with the environment *location*.

    *location* is a folder holding an alembic ``env.py`` (a plan's
    ``migrations = "..."``), or the name of one of ours (``migrations/<name>/``).
    The URL travels in ``attributes`` rather than the ini options, where
    ``%`` (common in encoded passwords) would be read as interpolation.
    """
    folder = Path(location)
    config = AlembicConfig()
    config.set_main_option("script_location",
                           str(folder) if (folder / "env.py").exists() else script_location(location))
    config.attributes["url"] = url
    return config
