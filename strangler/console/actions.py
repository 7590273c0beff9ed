"""What the console's buttons do: the same calls as ``strangler flip``, ``rollback`` and ``promote``.

Each action goes through :mod:`strangler.routing` (or the promotion
commands' own functions, :mod:`strangler.promote.cli`) with the CLI's guards
(strategy, owner, health, data links, a running controller, Traefik
confirming it), is recorded as ``console@<host>`` (in the history; a
promotion's author and every change it makes, or who aborted it), and a
refusal comes back as the CLI's one line (:class:`Refused`), nothing written.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from router.traefik import TraefikAPI
from strangler import routing
from strangler.console.snapshot import Sources
from strangler.promote.cli import Refused as PromoteRefused
from strangler.promote.cli import request_abort, start
from strangler.routing.cli import REFUSALS, Connection

MAX_ENDPOINTS = 500  # one flip from the page names at most this many endpoints


class Refused(Exception):
    """An action refused (bad input, or a guard said no): one line for the page."""


def who() -> str:
    """``console@<host>``: how the history records a change made from the console."""
    return f"console@{socket.gethostname()}"


def _endpoints(body: Mapping[str, Any]) -> tuple[list[str], str | None]:
    """The body's ``endpoints`` (a list of strings) and ``service``; Refused when malformed."""
    service = _text(body, "service", required=False)
    specs = body.get("endpoints") or []
    if not isinstance(specs, list) or len(specs) > MAX_ENDPOINTS or not all(isinstance(s, str) for s in specs):
        raise Refused(f"give endpoints as a list of at most {MAX_ENDPOINTS} strings")
    return specs, service


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
    specs, service = _endpoints(body)
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


def _connection(sources: Sources) -> Connection:
    return Connection(sources.plan(), sources.etcd_url(), sources.traefik_url())


def promote(sources: Sources, body: Mapping[str, Any]) -> dict[str, Any]:
    """``{"endpoints": [...]} or {"service": NAME}, "to": SERVICE`` -> a promotion with the default
    analysis (``strangler promote --detach``'s checks and record); the controller carries it."""
    target = _text(body, "to")
    specs, service = _endpoints(body)
    try:
        promotion = start(_connection(sources), specs, service, target, who=who())
    except (PromoteRefused, *REFUSALS) as exc:
        raise Refused(_line(exc)) from None
    steps = ",".join(str(s) for s in promotion.steps)
    how = "flip whole (it inserts rows)" if promotion.mode == "whole" else f"steps {steps}%"
    return {"ok": True, "promotion": promotion.id,
            "message": f"promotion {promotion.id}: {', '.join(promotion.endpoints)} to {promotion.target}, "
                       f"{how}, {promotion.interval:g}s each; the controller carries it"}


def abort_promotion(sources: Sources, body: Mapping[str, Any]) -> dict[str, Any]:
    """``{"endpoints": [...]} or {"service": NAME}`` -> ``strangler promote --abort``: the controller
    rolls back the promotion running there, recorded as aborted by ``console@<host>``."""
    specs, service = _endpoints(body)
    if not specs and not service:
        raise Refused("give the promotion's endpoints or its service")
    try:
        promotion_id = request_abort(_connection(sources), specs, service, who=who())
    except (PromoteRefused, *REFUSALS) as exc:
        raise Refused(_line(exc)) from None
    return {"ok": True, "promotion": promotion_id,
            "message": f"promotion {promotion_id}: abort asked; the controller rolls it back"}


def _line(exc: Exception) -> str:
    text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return " ".join(text.split())
