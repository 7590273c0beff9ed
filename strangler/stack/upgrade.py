"""Rolling upgrades of one backend's instances: ``try``, ``roll``, ``abort`` (MicroFlack's ``mfupgrade``).

``strangler upgrade users try`` writes an intent (``strangler/stack/upgrade/<backend>``,
JSON: step, release, env, the release it replaces) and a history record in
one transaction; the supervisor carries it out (:func:`actions`, called from
:func:`strangler.stack.scale.reconcile`) and marks it done:

- ``try``: one instance of the new release beside the old ones (it takes its
  share of traffic);
- ``roll``: the old instances replaced one at a time: start a new one, wait
  until healthy and registered, drain one old; capacity never drops. Without
  a pending try it is try + roll. Done: the step becomes ``rolled`` and the
  new release is what ``scale`` starts from then on;
- ``abort``: the new release's instances drained, the old count restored.
  Done: ``aborted``.

Blue/green (``--blue-green``, ``--finish``, ``--rollback``) uses the same key
with ``mode = "blue-green"``; its steps are carried out by
:mod:`strangler.stack.bluegreen`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

from router.etcd import Etcd

UPGRADE_PREFIX = "strangler/stack/upgrade/"
BLUE_GREEN = "blue-green"
# blue-green: the new set starting, switched to once all healthy; switched: both sets run, the
# new one live; finish / rollback: the old (new) set draining. Done: finished / rolled-back.
BLUE_GREEN_PENDING = (BLUE_GREEN, "switched", "finish", "rollback")
PENDING = ("try", "roll", "abort", *BLUE_GREEN_PENDING)
STEPS = ("try", "roll", "abort")


class UpgradeRefused(ValueError):
    """The step makes no sense now (one line saying why and what to do)."""


@dataclass(frozen=True)
class Intent:
    """One backend's upgrade as stored in etcd."""

    step: str  # try | roll | abort (pending), rolled | aborted (done)
    release: str
    env: dict[str, str] = field(default_factory=dict)
    previous: str = ""  # the release it replaces
    by: str = ""
    mode: str = ""  # "" (rolling: try/roll/abort) or "blue-green"
    service: str = ""  # blue/green: the new set's Traefik service
    base: str = ""  # blue/green: the old set's Traefik service (live before the switch)

    @property
    def pending(self) -> bool:
        """True until the supervisor has carried it out."""
        return self.step in PENDING

    @property
    def blue_green(self) -> bool:
        """A blue/green upgrade (two sets of instances, two Traefik services)."""
        return self.mode == BLUE_GREEN

    def to_json(self) -> str:
        """What the intent key holds."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Intent | None:
        """Parse an intent; None for none or a malformed one."""
        try:
            data = json.loads(text) if text else None
            return cls(**data) if isinstance(data, dict) else None
        except (ValueError, TypeError):
            return None


def upgrade_key(backend: str) -> str:
    """PURE: where ``backend``'s upgrade intent lives."""
    return f"{UPGRADE_PREFIX}{backend}"


def read_intents(etcd: Etcd) -> dict[str, Intent]:
    """Every backend's upgrade intent (malformed ones skipped)."""
    entries, _ = etcd.get_prefix(UPGRADE_PREFIX)
    found = {key[len(UPGRADE_PREFIX):]: Intent.from_json(value) for key, value in entries.items()}
    return {backend: intent for backend, intent in found.items() if intent is not None}


def decide(step: str, current: Intent | None, release: str, env: Mapping[str, str],
           running: Sequence[str], explicit: bool) -> Intent:
    """PURE: the intent ``strangler upgrade BACKEND STEP`` writes; UpgradeRefused when it makes no sense.

    ``current`` is the backend's stored intent, ``release``/``env`` the new
    release asked for (``explicit``: the operator named or changed it),
    ``running`` the releases its instances run now.
    """
    pending = current if current is not None and current.pending else None
    previous = ", ".join(sorted(set(running))) or "none"
    if pending is not None and pending.blue_green:
        raise UpgradeRefused(f"a blue/green of release {pending.release} is pending ({pending.step}); "
                             "finish it with --finish or undo it with --rollback first")
    if step == "try":
        if pending is not None:
            raise UpgradeRefused(f"a {pending.step} of release {pending.release} is pending; "
                                 "`roll` or `abort` it first")
        if release in running:
            raise UpgradeRefused(f"release {release} already runs; change the code, give --env K=V "
                                 "or --release NAME")
        return Intent("try", release, dict(env), previous)
    if step == "roll":
        if pending is not None and pending.step in ("roll", "abort"):
            raise UpgradeRefused(f"a {pending.step} of release {pending.release} is in progress; wait for it")
        if pending is not None:
            if explicit and release != pending.release:
                raise UpgradeRefused(f"a try of release {pending.release} is pending; roll it (without "
                                     "--release/--env) or abort it first")
            return Intent("roll", pending.release, pending.env, pending.previous)
        if release in running and set(running) == {release}:
            raise UpgradeRefused(f"release {release} already runs on every instance; nothing to roll")
        return Intent("roll", release, dict(env), previous)
    if step == "abort":
        if pending is None or pending.step == "abort":
            raise UpgradeRefused("no try or roll is pending; nothing to abort")
        return Intent("abort", pending.release, pending.env, pending.previous)
    raise UpgradeRefused(f"unknown step {step!r}; use try, roll or abort")


def decide_blue_green(step: str, current: Intent | None, release: str, env: Mapping[str, str],
                      running: Sequence[str], live: str, new: str) -> Intent:
    """PURE: the intent ``strangler upgrade BACKEND --blue-green|--finish|--rollback`` writes.

    ``step`` is ``blue-green``, ``finish`` or ``rollback``; ``live`` the Traefik
    service the backend's routers point at now, ``new`` the one a new set
    starts under. UpgradeRefused (one line) when it makes no sense now.
    """
    pending = current if current is not None and current.pending else None
    if step == BLUE_GREEN:
        if pending is not None and pending.blue_green:
            raise UpgradeRefused(f"a blue/green of release {pending.release} is pending ({pending.step}); "
                                 "finish it with --finish or undo it with --rollback first")
        if pending is not None:
            raise UpgradeRefused(f"a {pending.step} of release {pending.release} is pending; "
                                 "`roll` or `abort` it first")
        if running and set(running) == {release}:
            raise UpgradeRefused(f"release {release} already runs; change the code, give --env K=V "
                                 "or --release NAME")
        previous = ", ".join(sorted(set(running))) or "none"
        return Intent(BLUE_GREEN, release, dict(env), previous, mode=BLUE_GREEN, service=new, base=live)
    if pending is None or not pending.blue_green:
        what = "finish" if step == "finish" else "roll back"
        raise UpgradeRefused(f"no blue/green is pending; nothing to {what}")
    if pending.step in ("finish", "rollback"):
        raise UpgradeRefused(f"a {pending.step} of the blue/green of release {pending.release} is in "
                             "progress; wait for it")
    if step == "finish" and pending.step != "switched":
        raise UpgradeRefused(f"the blue/green of release {pending.release} has not switched yet; wait "
                             "for it, or --rollback")
    return replace(pending, step=step)


class Seen(NamedTuple):
    """One instance as the supervisor sees it (draining ones left out)."""

    name: str
    release: str
    state: str
    index: int
    service: str = ""  # its Traefik service (a blue/green set's)


def _newest_first(instances: Sequence[Seen]) -> list[Seen]:
    # crashlooping ones go first, then the highest index
    return sorted(instances, key=lambda i: (i.state != "crashlooping", -i.index))


def scale_to(instances: Sequence[Seen], count: int, which: str) -> list[tuple[str, str]]:
    """PURE: start ``which`` or drain the newest until ``count`` remain."""
    if len(instances) < count:
        return [("start", which)] * (count - len(instances))
    return [("drain", i.name) for i in _newest_first(instances)[: len(instances) - count]]


def actions(count: int, intent: Intent, instances: Sequence[Seen]) -> tuple[list[tuple[str, str]], bool]:
    """PURE: what the supervisor does next for a pending ``intent``, and whether it is done.

    Actions are ``("start", "new" | "old")`` and ``("drain", name)``. ``count``
    is the backend's wanted instance count (a try runs one more).
    """
    new = [i for i in instances if i.release == intent.release]
    old = [i for i in instances if i.release != intent.release]
    if intent.step == "try":
        keep = [] if new else [("start", "new")]
        extra = [("drain", i.name) for i in _newest_first(new)[:-1]]
        return keep + extra + scale_to(old, count, "old"), bool(new) and new[0].state == "healthy"
    if intent.step == "abort":
        return [("drain", i.name) for i in new] + scale_to(old, count, "old"), not new
    # roll: one at a time, never below count, never on while a new one is unwell
    if any(i.state in ("starting", "crashlooping") for i in new):
        return [], False
    if old and len(new) + len(old) > count:
        return [("drain", _newest_first(old)[0].name)], False
    if len(new) < count:
        return [("start", "new")], False
    if len(new) > count:
        return [("drain", i.name) for i in _newest_first(new)[: len(new) - count]], False
    return [], not old


def finished(intent: Intent) -> Intent:
    """PURE: the intent once carried out (``rolled`` / ``aborted``, a blue/green ``switched``,
    ``finished``, ``rolled-back``; a try stays pending)."""
    done = {"roll": "rolled", "abort": "aborted", BLUE_GREEN: "switched", "finish": "finished",
            "rollback": "rolled-back"}.get(intent.step, intent.step)
    return replace(intent, step=done)


def stamp(intent: Intent, who: str) -> Intent:
    """PURE: ``intent`` signed by ``who`` (with the time, for the record)."""
    return replace(intent, by=f"{who} {time.time():.0f}")
