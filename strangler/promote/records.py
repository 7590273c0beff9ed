"""Promotions as etcd records: created with their endpoint locks in one transaction, updated by CAS.

Keys (docs/etcd-keys.md):

- ``strangler/promotions/<id>``: the promotion (JSON, :class:`Promotion`);
- ``strangler/promoting/<endpoint-id>``: the id of the promotion running on that
  endpoint; created with the record only if absent (a second promotion of the
  same endpoint is refused), deleted with the record's final state;
- ``strangler/meta/last-promotion``: the last id given out (its CAS guard);
- ``strangler/controller``: bound to the running controller's lease.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from router.etcd import Compare, Etcd
from router.keys import META_PREFIX, parse_endpoint

log = logging.getLogger(__name__)
PROMOTIONS_PREFIX = "strangler/promotions/"
LOCKS_PREFIX = "strangler/promoting/"
LAST_KEY = META_PREFIX + "last-promotion"
CONTROLLER_KEY = "strangler/controller"
RUNNING = "running"
PROMOTED = "promoted"
ROLLED_BACK = "rolled back"
ENDED = (PROMOTED, ROLLED_BACK)
KEEP_ENDED = 50  # finished promotions kept for `strangler promotions`; older ones are deleted
# log lines kept per promotion (a step without traffic adds a "wait" line every interval)
KEEP_LINES = 200


class PromotionRefused(Exception):
    """A promotion cannot start (or be aborted); the message is one line saying why."""


class MalformedPromotion(PromotionRefused):
    """A record under the promotions' keys is not a promotion (hand-edited, another version...)."""


REQUIRED = ("id", "endpoints", "target", "steps", "interval", "thresholds", "who")
# field -> the types its JSON value may have (a record that breaks these is MalformedPromotion)
_TYPES: dict[str, tuple[type, ...]] = {
    "id": (int,), "endpoints": (list,), "target": (str,), "steps": (list,), "interval": (int, float),
    "thresholds": (dict,), "who": (str,), "mode": (str,), "reads": (list,), "before": (dict,),
    "state": (str,), "step": (int,), "phase": (str,), "step_started": (int, float, type(None)),
    "baseline": (dict, type(None)), "waits": (int,), "abort": (str, type(None)),
    "created": (int, float), "ended": (int, float, type(None)), "outcome": (str,), "log": (list,),
}


@dataclass
class Promotion:
    """One promotion: what it moves, how, and where it stands.

    ``phase`` is where the controller is within step ``step``: ``set`` (the
    weight is to be written), ``watch`` (written at ``step_started``, with the
    metrics ``baseline`` read then), ``rollback`` (the old routes are to be
    written back). ``mode`` is ``canary`` (weights ``steps``) or ``whole``
    (inserting endpoints: optionally shadow ``reads`` first, then flip whole
    and watch one interval). ``before`` holds every touched endpoint's route
    before the promotion (None: not in the table).
    """

    id: int
    endpoints: list[str]
    target: str
    steps: list[int]
    interval: float
    thresholds: dict[str, Any]
    who: str
    mode: str = "canary"
    reads: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    state: str = RUNNING
    step: int = 0
    phase: str = "set"
    step_started: float | None = None
    baseline: dict[str, Any] | None = None
    waits: int = 0
    abort: str | None = None
    created: float = field(default_factory=time.time)
    ended: float | None = None
    outcome: str = ""
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Where it lives in etcd."""
        return promotion_key(self.id)

    @property
    def weight(self) -> int:
        """The candidate's share in the current step."""
        return self.steps[min(self.step, len(self.steps) - 1)]

    def to_json(self) -> str:
        """Serialise for etcd."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Promotion:
        """Inverse of to_json (unknown fields are ignored); MalformedPromotion if it is not one."""
        try:
            data = json.loads(text)
        except ValueError:
            raise MalformedPromotion("not JSON") from None
        if not isinstance(data, dict):
            raise MalformedPromotion(f"a JSON {type(data).__name__}, not an object")
        for name, types in _TYPES.items():
            if name in data and (not isinstance(data[name], types) or isinstance(data[name], bool)):
                raise MalformedPromotion(f"its {name} is a {type(data[name]).__name__}")
        if not all(isinstance(s, str) for s in data.get("endpoints", []) + data.get("reads", [])):
            raise MalformedPromotion("its endpoints are not all strings")
        if not data.get("endpoints", [""]) or not data.get("steps", [0]) or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 100 for s in data.get("steps", [])):
            raise MalformedPromotion("it has no endpoints, or no steps from 0 to 100")
        if not all(isinstance(e, dict) and isinstance(e.get("line"), str)
                   and isinstance(e.get("time"), int | float) and isinstance(e.get("n", 0), int)
                   for e in data.get("log", [])):
            raise MalformedPromotion("its log lines are not objects with a line and a time")
        missing = [name for name in REQUIRED if name not in data]
        if missing:
            raise MalformedPromotion(f"it lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def note(self, line: str, **extra: Any) -> None:
        """Add a line (and figures) to its log, for `strangler promote` and `strangler promotions`.

        Lines are numbered (``n``) so a reader can follow the log after its oldest
        lines were dropped (only the latest KEEP_LINES are kept)."""
        n = self.log[-1].get("n", len(self.log)) + 1 if self.log else 1
        self.log.append({"n": n, "time": time.time(), "step": self.step, "line": line, **extra})
        del self.log[:-KEEP_LINES]


def promotion_key(promotion_id: int) -> str:
    """PURE: the record's key (zero-padded so keys sort by id)."""
    return f"{PROMOTIONS_PREFIX}{promotion_id:08d}"


def lock_key(spec: str) -> str:
    """PURE: the lock of endpoint ``spec`` while a promotion runs on it."""
    return LOCKS_PREFIX + parse_endpoint(spec).id


def create(etcd: Etcd, make: Callable[[int], Promotion]) -> Promotion:
    """Store the promotion ``make(id)`` builds, with its endpoints' locks, in ONE transaction.

    Refused (PromotionRefused, nothing written) when a promotion runs on one of its endpoints.
    """
    for _attempt in range(5):
        last = etcd.get_entry(LAST_KEY)
        promotion = make(_number(LAST_KEY, last.value) + 1 if last else 1)
        locks = [lock_key(spec) for spec in promotion.endpoints + promotion.reads]
        for key in locks:
            holder = etcd.get(key)
            if holder is not None:
                spec = next(s for s in promotion.endpoints + promotion.reads if lock_key(s) == key)
                raise PromotionRefused(
                    f"promotion {_number(key, holder)} is running on {spec}; wait for it, or stop it "
                    f"with `strangler promote --abort '{spec}'`")
        compares = [Compare(LAST_KEY, last.mod_revision if last else 0)] + [Compare(k, 0) for k in locks]
        puts = {promotion.key: promotion.to_json(), LAST_KEY: str(promotion.id)}
        puts |= {k: str(promotion.id) for k in locks}
        if etcd.txn(compares, puts):
            return promotion
    raise PromotionRefused("promotions are being started concurrently on these endpoints; retry")


def get(etcd: Etcd, promotion_id: int) -> tuple[Promotion, int] | None:
    """The promotion and its record's mod revision (for CAS), or None."""
    key = promotion_key(promotion_id)
    entry = etcd.get_entry(key)
    if entry is None:
        return None
    try:
        return Promotion.from_json(entry.value), entry.mod_revision
    except MalformedPromotion as exc:
        raise MalformedPromotion(f"{key} in etcd is not a promotion ({exc}); delete that key") from None


def all_promotions(etcd: Etcd, malformed: list[str] | None = None) -> list[Promotion]:
    """Every stored promotion, oldest first; a record that is not one is skipped (its key
    and why go to ``malformed`` when given, else to the log)."""
    entries, _ = etcd.get_prefix_entries(PROMOTIONS_PREFIX)
    found = []
    for key, entry in sorted(entries.items()):
        try:
            found.append(Promotion.from_json(entry.value))
        except MalformedPromotion as exc:
            line = f"{key} in etcd is not a promotion ({exc}); skipped"
            if malformed is None:
                log.warning("%s", line)
            else:
                malformed.append(line)
    return found


def _number(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise MalformedPromotion(f"{key} in etcd holds {text[:40]!r}, not a promotion id; delete it") from None


def save(etcd: Etcd, promotion: Promotion, mod_revision: int) -> int | None:
    """Write ``promotion`` if its record is still at ``mod_revision``; the new revision, or None.

    A finished promotion releases its endpoints' locks in the same transaction.
    """
    deletes = [lock_key(s) for s in promotion.endpoints + promotion.reads] if promotion.state in ENDED else []
    return etcd.txn_revision([Compare(promotion.key, mod_revision)], {promotion.key: promotion.to_json()}, deletes)


def update(etcd: Etcd, promotion_id: int, change: Callable[[Promotion], None]) -> Promotion:
    """Read, change and write back one promotion, retrying when someone wrote it meanwhile."""
    for _attempt in range(20):
        found = get(etcd, promotion_id)
        if found is None:
            raise PromotionRefused(f"there is no promotion {promotion_id}; see strangler promotions")
        promotion, revision = found
        change(promotion)
        if save(etcd, promotion, revision) is not None:
            return promotion
    raise PromotionRefused(f"promotion {promotion_id} kept changing under us; retry")


def running_on(etcd: Etcd, specs: list[str]) -> int | None:
    """The id of the promotion running on any of ``specs`` (None: none)."""
    for spec in specs:
        key = lock_key(spec)
        holder = etcd.get(key)
        if holder is not None:
            return _number(key, holder)
    return None


def prune(etcd: Etcd, keep: int = KEEP_ENDED) -> None:
    """Delete finished promotions beyond the ``keep`` most recent (bounded storage)."""
    ended = [p for p in all_promotions(etcd, malformed=[]) if p.state in ENDED]
    for promotion in ended[:-keep] if len(ended) > keep else []:
        etcd.delete(promotion.key)


def controller_alive(etcd: Etcd) -> Mapping[str, Any] | None:
    """The running controller's description, None when none holds its key."""
    text = etcd.get(CONTROLLER_KEY)
    return json.loads(text) if text else None
