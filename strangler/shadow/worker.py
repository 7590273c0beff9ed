"""The comparator's core: a bounded queue of mirrored requests and the threads that replay them.

``Comparator.submit`` runs in the thread answering Traefik: it only looks
the request up (in memory), counts it and puts it on the queue, or counts
it as dropped when the queue is full, so a slow comparison never holds a
mirrored request (or Traefik) up. Worker threads then ask the monolith
twice and the candidate once, directly (not through Traefik), learn the
endpoint's noise from the two monolith answers (Diffy's idea: what differs
between two answers of the same backend to the same request is noise), and
diff the candidate against the monolith with that noise left out: a field
is noise for the endpoint only while the monolith disagrees with itself on
it often enough lately (strangler.shadow.noise), else only where it did.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import urllib3

from router.keys import MIRROR_HEADER, SAFE, Endpoint
from strangler.compare.diff import Answer, Rule, diff, noise_between
from strangler.plan import CompareRule
from strangler.shadow.matching import Matcher
from strangler.shadow.noise import NoiseRule, NoiseWindow
from strangler.shadow.redact import redact_difference, redact_headers, redact_target, redact_text
from strangler.shadow.store import ShadowStore

log = logging.getLogger(__name__)

COMPARATOR = "comparator"  # the comparator's backend name (its Traefik service)
UNROUTED = "(unrouted)"
# Not replayed: hop-by-hop headers, what the HTTP client sets itself, and what Traefik added.
DROP_HEADERS = frozenset({
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "trailer",
    "upgrade", "proxy-authorization", "proxy-connection", "x-forwarded-for", "x-forwarded-host",
    "x-forwarded-port", "x-forwarded-proto", "x-forwarded-server", "x-real-ip",
    MIRROR_HEADER.lower(),  # Traefik's mark for the comparator, not part of the user's request
})
EXAMPLE_HEADERS = ("Content-Type", "Location")


class Mirrored(NamedTuple):
    """One request as Traefik mirrored it to the comparator."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def target(self) -> str:
        """Path and query, as sent."""
        return self.path + (f"?{self.query}" if self.query else "")


class Directory(Protocol):
    """Where the comparator learns which endpoint is shadowed to whom, backends' URLs, and the
    secret Traefik marks mirrored copies with (None: not known, every copy is refused)."""

    monolith: str
    secret: str | None

    def lookup(self, method: str, path: str) -> tuple[Endpoint, str | None] | None:
        """The shadowed endpoint ``method path`` belongs to and its candidate; None if not shadowed."""

    def url(self, backend: str) -> str | None:
        """A base URL of one live instance of ``backend``, or None."""


class StaticDirectory:
    """A fixed directory: endpoint -> candidate, backend -> URLs (tests, benchmarks, one-off runs)."""

    def __init__(self, targets: Mapping[Endpoint, str], urls: Mapping[str, list[str]],
                 monolith: str = "monolith", secret: str | None = None) -> None:
        self.monolith = monolith
        self.secret = secret
        self.targets = dict(targets)
        self.matcher = Matcher(self.targets)
        self._urls = {name: itertools.cycle(list(found)) for name, found in urls.items() if found}

    def lookup(self, method: str, path: str) -> tuple[Endpoint, str | None] | None:
        """See Directory.lookup."""
        endpoint = self.matcher.match(method, path)
        return None if endpoint is None else (endpoint, self.targets[endpoint])

    def url(self, backend: str) -> str | None:
        """See Directory.url (round robin)."""
        found = self._urls.get(backend)
        return next(found) if found else None


Rules = Callable[[Endpoint], CompareRule]


def answer_of(response: urllib3.BaseHTTPResponse) -> Answer:
    """The diff engine's view of a response (its headers look up case-insensitively)."""
    return Answer(response.status, response.headers, response.data)


def _shown(answer: Answer, limit: int) -> dict[str, Any]:
    # redacted whole, then cut: a JSON body cut short could no longer be parsed
    body = redact_text(answer.body.decode("utf-8", "replace"))[:limit]
    headers = {name: answer.headers[name] for name in EXAMPLE_HEADERS if name in answer.headers}
    return {"status": answer.status, "headers": redact_headers(headers), "body": body,
            "truncated": len(answer.body) > limit}


class Comparator:
    """The queue, its worker threads and the comparisons; ``start()`` once, ``stop()`` at exit."""

    def __init__(self, directory: Directory, store: ShadowStore, rules: Rules = lambda e: CompareRule(),
                 *, queue_size: int = 1000, workers: int = 4, timeout: float = 5.0,
                 flush_every: float = 0.5, sample: float = 1.0) -> None:
        if not 0 < sample <= 1:
            raise ValueError(f"sample={sample!r} must be a share above 0 and at most 1")
        self.directory = directory
        # The share of replayable copies compared; the others are counted "sampled_out".
        # Deterministic (every 1/sample-th copy), so the counts are exact, never a guess.
        self.sample = sample
        self._credit = 1.0 - sample
        self._sample_lock = threading.Lock()
        self.store = store
        self.rules = rules
        self.queue: queue.Queue[tuple[Endpoint, str, Mirrored] | None] = queue.Queue(queue_size)
        self.workers = workers
        self.timeout = timeout
        self.flush_every = flush_every
        self.noise_rule = NoiseRule()
        self.noise: dict[Endpoint, NoiseWindow] = {}  # what the monolith disagrees with itself on, lately
        self._noise_lock = threading.Lock()
        # Keep-alive pools shared by the worker threads. urllib3 itself, not requests:
        # replaying is the comparator's hot path, and requests' layers cost CPU per call.
        self._http = urllib3.PoolManager(num_pools=32, maxsize=max(workers, 1), retries=False,
                                         block=False)
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # -- the request thread ----------------------------------------------------------------

    def submit(self, item: Mirrored) -> str:
        """Take one mirrored request; returns "queued", "dropped" (queue full), "sampled out"
        (beyond the configured share) or "skipped"."""
        found = self.directory.lookup(item.method, item.path)
        if found is None:
            self.store.count(UNROUTED, "seen")
            self.store.count(UNROUTED, "skipped")
            return "skipped"
        endpoint, target = found
        name = str(endpoint)
        self.store.count(name, "seen", target=target)
        if target is None:
            self.store.error(name, "no shadow target stored; run strangler shadow ... --to SERVICE")
            return "skipped"
        if item.method not in SAFE and not self.rules(endpoint).shadow_unsafe:
            # Replaying a write would do it twice more; the plan must allow it (shadow_unsafe).
            self.store.count(name, "skipped")
            return "skipped"
        if not self._sampled():
            self.store.count(name, "sampled_out")
            return "sampled out"
        try:
            self.queue.put_nowait((endpoint, target, item))
        except queue.Full:
            self.store.count(name, "dropped")
            return "dropped"
        return "queued"

    def _sampled(self) -> bool:
        if self.sample >= 1:
            return True
        with self._sample_lock:
            self._credit += self.sample
            if self._credit < 1:
                return False
            self._credit -= 1
            return True

    # -- the worker threads ------------------------------------------------------------------

    def start(self) -> Comparator:
        """Start the worker threads and the flusher (daemon threads)."""
        self._stop.clear()
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"shadow-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        flusher = threading.Thread(target=self._flush_loop, name="shadow-flusher", daemon=True)
        flusher.start()
        self._threads.append(flusher)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads (queued requests not yet compared are left) and flush the counts."""
        self._stop.set()
        for _ in range(self.workers):
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                break
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self.store.flush()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_every):
            try:
                self.store.flush()
            except Exception:  # noqa: BLE001 - a full disk must not stop the comparisons
                log.exception("could not write the shadow results")

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self.queue.get()
            if job is None:
                return
            try:
                self.compare(*job)
            except Exception:  # noqa: BLE001 - one bad request must not end the worker
                log.exception("comparing %s failed", job[0])
                self.store.error(str(job[0]), "comparator bug; see its log")

    def _send(self, base: str, item: Mirrored) -> Answer:
        headers = {k: v for k, v in item.headers if k.lower() not in DROP_HEADERS}
        response = self._http.request(
            item.method, base.rstrip("/") + item.target, headers=headers,
            body=item.body or None, timeout=self.timeout, redirect=False)
        return answer_of(response)

    def compare(self, endpoint: Endpoint, target: str, item: Mirrored) -> list:
        """Replay ``item`` (monolith, candidate, monolith again), learn noise, record the differences."""
        name = str(endpoint)
        monolith, candidate = self.directory.url(self.directory.monolith), self.directory.url(target)
        if monolith is None or candidate is None:
            missing = self.directory.monolith if monolith is None else target
            self.store.error(name, f"no registered instance of {missing}")
            return []
        try:
            # The candidate is asked between the two monolith answers, so a clock value
            # that did not move between them did not move for the candidate either.
            first = self._send(monolith, item)
            other = self._send(candidate, item)
            second = self._send(monolith, item)
        except urllib3.exceptions.HTTPError as exc:
            self.store.error(name, redact_text(f"{exc.__class__.__name__}: {exc}"))
            return []
        rule = Rule.from_plan(self.rules(endpoint))
        with self._noise_lock:
            window = self.noise.get(endpoint)
            if window is None:
                window = self.noise[endpoint] = NoiseWindow(self.noise_rule)
            left_out = window.observe(noise_between(first, second, rule))
            rates = window.rates()
        self.store.noise_rates(name, rates, noisy=window.noisy())
        differences = diff(first, other, rule, noise=left_out)
        example = {}
        if differences:
            limit = self.store.body_limit
            example = {
                "time": time.time(),
                "request": {"method": item.method, "target": redact_target(item.target),
                            "body": redact_text(item.body.decode("utf-8", "replace"))[:limit]},
                "monolith": _shown(first, limit),
                "candidate": _shown(other, limit),
                "differences": [redact_difference(d._asdict()) for d in differences[:10]],
            }
        self.store.comparison(name, target, differences, example)
        return differences
