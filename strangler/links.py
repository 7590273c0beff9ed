"""The data link records in etcd: which services' tables are linked with the monolith's.

``strangler up`` writes them (strangler.stack.data, after copying a
service's tables and giving each side its id lane); the routing guards read
them before moving traffic to a service that owns data, and ``status``
shows them. Pure functions on the records, plus the one read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from router.etcd import Etcd
from strangler.plan import Plan

LINKS_PREFIX = "strangler/data/links/"


def link_key(service: str) -> str:
    """The etcd key recording that *service*'s tables are linked with the monolith's."""
    return f"{LINKS_PREFIX}{service}"


def read_links(etcd: Etcd) -> dict[str, dict[str, Any]]:
    """Every recorded link: service -> ``{"tables", "source", "target", "linked_at", "rows", "seconds"}``."""
    found, _ = etcd.get_prefix(LINKS_PREFIX)
    links = {}
    for key, value in found.items():
        try:
            record = json.loads(value)
        except ValueError:
            continue  # a hand-written value is not a link
        if isinstance(record, dict):
            links[key.removeprefix(LINKS_PREFIX)] = record
    return links


def is_linked(plan: Plan, service: str, links: Mapping[str, Mapping[str, Any]]) -> bool:
    """PURE: True when *links* has *service* with every table the plan now gives it."""
    record = links.get(service)
    return bool(record) and set(plan.backend(service).tables) <= set(record.get("tables", ()))


def unlinked(plan: Plan, services: Iterable[str], links: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """PURE: those of *services* that own data (database and tables) but are not linked."""
    owners = set(plan.data_services())
    return [name for name in dict.fromkeys(services) if name in owners and not is_linked(plan, name, links)]
