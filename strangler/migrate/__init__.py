"""``strangler migrate``: schemas (alembic, one environment per database) and data moves.

``schema`` upgrades/downgrades the plan's databases; ``copy`` moves a
service's tables out of the monolith's database in bulk; ``sync`` carries
later changes (either direction); ``verify`` compares counts and checksums.
The CLI lives in :mod:`strangler.migrate.cli`; docs/migrate.md explains it.
"""
