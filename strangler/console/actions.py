"""What the console's buttons do: the same calls as ``strangler flip`` and ``strangler rollback``.

Each action goes through :mod:`strangler.routing` with the CLI's guards
(strategy, owner, health, data links, Traefik confirming it), is recorded in
the history as ``console@<host>``, and a refusal comes back as the CLI's
one line (:class:`Refused`), nothing written.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from router.traefik import TraefikAPI
from strangler import routing
from strangler.console.snapshot import Sources
from strangler.routing.cli import REFUSALS

MAX_ENDPOINTS = 500  # one flip from the page names at most this many endpoints


class Refused(Exception):
    """An action refused (bad input, or a guard said no): one line for the page."""


def who() -> str:
    """``console@<host>``: how the history records a change made from the console."""
    return f"console@{socket.gethostname()}"


def _text(body: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 300:
        raise Refused(f"give {key} as a non-empty string")
    return value.strip()


def _describe(outcome: routing.Outcome) -> dict[str, Any]:
    change = outcome.change
    if change is None:
        return {"ok": True, "message": "nothing to change: the routing already is as asked"}
    return {"ok": True, "change": change.id, "revision": change.revision,
            "message": f"{change.what} (change {change.id})"}


def flip(sources: Sources, body: Mapping[str, Any]) -> dict[str, Any]:
    """``{"endpoints": [...]} or {"service": NAME}, "to": BACKEND`` -> routing.flip, as ``strangler flip``."""
    target = _text(body, "to")
    service = _text(body, "service", required=False)
    specs = body.get("endpoints") or []
    if not isinstance(specs, list) or len(specs) > MAX_ENDPOINTS or not all(isinstance(s, str) for s in specs):
        raise Refused(f"give endpoints as a list of at most {MAX_ENDPOINTS} strings")
    try:
        plan = sources.plan()
        chosen = routing.resolve(plan, specs, service)
        api = TraefikAPI(sources.traefik_url() or "")
        outcome = routing.flip(sources.etcd(), plan, chosen, target, api=api, who=who())
    except REFUSALS as exc:
        raise Refused(str(exc)) from None
    return _describe(outcome)


def rollback(sources: Sources, body: Mapping[str, Any]) -> dict[str, Any]:
    """``{"change": ID}`` -> routing.rollback of that change, as ``strangler rollback ID``."""
    change = body.get("change")
    if not isinstance(change, int) or isinstance(change, bool) or change < 1:
        raise Refused("give change as a change id (a whole number); see the history")
    try:
        api = TraefikAPI(sources.traefik_url() or "")
        outcome = routing.rollback(sources.etcd(), change, plan=sources.plan(), api=api, who=who())
    except REFUSALS as exc:
        raise Refused(str(exc)) from None
    return _describe(outcome)
