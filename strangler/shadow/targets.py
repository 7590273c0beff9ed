"""Where the comparator finds each shadowed endpoint's candidate: ``strangler/shadow/<endpoint-id>``.

A route in the table says only that a copy goes to the comparator
(``Route.mirror``); which backend the comparator compares the monolith with
is kept beside it, one key per endpoint (JSON ``{"endpoint", "target"}``).
``strangler shadow --off`` leaves the key in place, so a rollback that puts
the mirror back also gets its candidate back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from router.etcd import Etcd
from router.keys import Endpoint, parse_endpoint

COMPARATOR = "comparator"  # the comparator's backend name (its Traefik service)
TARGETS_PREFIX = "strangler/shadow/"


def target_key(endpoint: Endpoint) -> str:
    """PURE: the key holding ``endpoint``'s shadow candidate."""
    return TARGETS_PREFIX + endpoint.id


def read_targets(etcd: Etcd) -> dict[Endpoint, str]:
    """Every stored shadow candidate, by endpoint (malformed entries are skipped)."""
    values, _ = etcd.get_prefix(TARGETS_PREFIX)
    found: dict[Endpoint, str] = {}
    for text in values.values():
        try:
            data = json.loads(text)
            found[parse_endpoint(data["endpoint"])] = str(data["target"])
        except (ValueError, KeyError, TypeError):
            continue
    return found


def write_targets(etcd: Etcd, targets: Mapping[Endpoint, str]) -> None:
    """Store the candidate of each endpoint in ``targets`` (one transaction)."""
    puts = {
        target_key(endpoint): json.dumps({"endpoint": str(endpoint), "target": target})
        for endpoint, target in targets.items()
    }
    if puts:
        etcd.txn(puts=puts)
