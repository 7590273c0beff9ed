"""The service registry: instances join their backend on start and leave on stop or crash.

An instance writes two keys, both bound to one etcd lease that it keeps
alive from a background thread:

- ``traefik/http/services/<backend>/loadbalancer/servers/<instance-id>/url``
  — so Traefik balances over it (instance ids as server keys need no index
  bookkeeping; verified against Traefik 3.7);
- ``strangler/instances/<backend>/<instance-id>`` — JSON describing it, for
  the toolkit (``strangler status``, refusing flips to a backend with no
  healthy instance).

A clean stop revokes the lease (both keys vanish at once); a crash stops the
keep-alive, and etcd deletes the keys when the lease's TTL runs out.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

import urllib3

from router.etcd import Etcd, EtcdError, Lease, Put
from router.release import release

log = logging.getLogger(__name__)

TRAEFIK_ROOT = "traefik"
INSTANCES_PREFIX = "strangler/instances/"
# A drained instance's marker: its registration does not come back when its lease is revoked.
DRAINED_PREFIX = "strangler/drained/"
RETRY_AFTER_FAILURE = 1.0  # seconds between keep-alive attempts while etcd does not answer
DRAINED_TTL = 600  # seconds the marker outlives the drain (the instance has stopped by then)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _check_segment(what: str, value: str) -> str:
    # A slash would shift every later path segment: Traefik would read a different key.
    if not value or "/" in value or value != value.strip():
        raise ValueError(f"{what} {value!r} must be non-empty, without '/' or surrounding spaces")
    return value


def server_key(backend: str, instance_id: str, root: str = TRAEFIK_ROOT) -> str:
    """PURE: the Traefik key holding one instance's URL in ``backend``'s load balancer."""
    _check_segment("backend", backend)
    _check_segment("instance id", instance_id)
    return f"{root}/http/services/{backend}/loadbalancer/servers/{instance_id}/url"


def instance_key(backend: str, instance_id: str) -> str:
    """PURE: the key holding one instance's description (JSON)."""
    _check_segment("backend", backend)
    _check_segment("instance id", instance_id)
    return f"{INSTANCES_PREFIX}{backend}/{instance_id}"


def drained_key(backend: str, instance_id: str) -> str:
    """PURE: the marker saying an instance was drained on purpose (bound to its own lease)."""
    _check_segment("backend", backend)
    _check_segment("instance id", instance_id)
    return f"{DRAINED_PREFIX}{backend}/{instance_id}"


def instances_prefix(backend: str | None = None) -> str:
    """PURE: the prefix under which every instance (of ``backend``, if given) is described."""
    return (
        INSTANCES_PREFIX
        if backend is None
        else f"{INSTANCES_PREFIX}{_check_segment('backend', backend)}/"
    )


def make_instance_id(url: str, host: str | None = None, token: str | None = None) -> str:
    """PURE given ``host``/``token``: ``<hostname>-<port>-<short random>``, safe as a key segment."""
    host = host or socket.gethostname()
    port = urlsplit(url).port or 80
    token = token or secrets.token_hex(3)
    return _UNSAFE.sub("-", f"{host}-{port}-{token}").strip("-")


class Instance(NamedTuple):
    """A registered instance as read back from etcd."""

    backend: str
    instance_id: str
    url: str
    version: str = ""
    pid: int | None = None
    host: str = ""
    started: float | None = None
    health_path: str = "/healthz"
    release: str = ""  # the release label (strangler.stack.release): which build of the backend
    # the Traefik service it registers its URL under ("" = the backend's own name; a
    # blue/green's second set registers as "<backend>-green")
    service: str = ""

    @property
    def traefik_service(self) -> str:
        """The Traefik service whose load balancer lists this instance."""
        return self.service or self.backend

    @property
    def health_url(self) -> str:
        """Where to probe this instance's health."""
        return self.url.rstrip("/") + self.health_path

    def to_json(self) -> str:
        """The JSON stored under ``instance_key`` (backend and id live in the key)."""
        return json.dumps(
            {
                "url": self.url,
                "version": self.version,
                "pid": self.pid,
                "host": self.host,
                "started": self.started,
                "health_path": self.health_path,
                "release": self.release,
                "service": self.traefik_service,
            },
            sort_keys=True,
        )

    @classmethod
    def from_key(cls, key: str, value: str) -> Instance | None:
        """Parse one ``strangler/instances/<backend>/<id>`` entry; None if malformed."""
        parts = key[len(INSTANCES_PREFIX) :].split("/")
        if not key.startswith(INSTANCES_PREFIX) or len(parts) != 2:
            return None
        try:
            data = json.loads(value)
            return cls(
                backend=parts[0],
                instance_id=parts[1],
                url=str(data["url"]),
                version=str(data.get("version", "")),
                pid=data.get("pid"),
                host=str(data.get("host", "")),
                started=data.get("started"),
                health_path=str(data.get("health_path") or "/healthz"),
                release=str(data.get("release") or ""),
                service="" if data.get("service") in (None, "", parts[0]) else str(data["service"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def _default_version() -> str:
    return release()


class Registration:
    """Keeps one instance registered under ``backend`` while it runs.

    Use as a context manager, or call ``start()`` / ``stop()``. Whoever owns
    the serving process should create exactly one (for gunicorn: in the
    master, see ``router.gunicorn_hooks``).
    """

    def __init__(
        self,
        etcd: Etcd,
        backend: str,
        url: str,
        *,
        instance_id: str | None = None,
        version: str | None = None,
        ttl: int = 5,
        health_path: str = "/healthz",
        release: str = "",
        service: str = "",
    ) -> None:
        if ttl < 2:
            raise ValueError(f"ttl {ttl} is too short; use at least 2 seconds")
        self.etcd = etcd
        self.instance = Instance(
            backend=_check_segment("backend", backend),
            instance_id=_check_segment("instance id", instance_id or make_instance_id(url)),
            url=url,
            version=_default_version() if version is None else version,
            pid=os.getpid(),
            host=socket.gethostname(),
            started=None,
            health_path=health_path,
            release=release,
            service=_check_segment("service", service) if service and service != backend else "",
        )
        self.ttl = ttl
        self.lease: Lease | None = None
        self.registrations = 0  # how many leases were granted (1 + re-registrations)
        self.drained = False  # someone deregistered us on purpose: stay out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def instance_id(self) -> str:
        """This instance's id (the last segment of both keys)."""
        return self.instance.instance_id

    @property
    def keys(self) -> tuple[str, str]:
        """PURE: the two keys this registration writes."""
        return (
            server_key(self.instance.traefik_service, self.instance_id),
            instance_key(self.instance.backend, self.instance_id),
        )

    def _register(self) -> None:
        """Grant a fresh lease and put both keys with it in one transaction."""
        lease = self.etcd.lease(self.ttl)
        described = self.instance._replace(started=self.instance.started or time.time())
        traefik, mine = self.keys
        self.etcd.txn(
            puts=[Put(traefik, self.instance.url, lease), Put(mine, described.to_json(), lease)]
        )
        with self._lock:
            if self._stop.is_set():  # stop() ran meanwhile: do not leave keys behind
                lease.revoke()
                return
            self.lease = lease
            self.instance = described
            self.registrations += 1

    def start(self, required: bool = True) -> Registration:
        """Register now and keep the registration alive in a daemon thread.

        With ``required`` (the default) an unreachable etcd raises
        EtcdUnavailable; without it the thread keeps trying to register.
        """
        if self._thread is not None:
            return self
        self._stop.clear()
        try:
            self._register()
        except EtcdError:
            if required:
                raise
            log.warning("etcd unreachable; %s will register when it answers", self.instance_id)
        self._thread = threading.Thread(
            target=self._keep_alive, name=f"registry-{self.instance_id}", daemon=True
        )
        self._thread.start()
        return self

    def _keep_alive(self) -> None:
        # Refresh three times per TTL so one lost refresh never lets the lease lapse;
        # after a failure, every second, so a registration that did lapse is back at once.
        interval = self.ttl / 3
        wait = interval
        while not self._stop.wait(wait):
            wait = interval
            try:
                lease = self.lease
                if lease is None or lease.refresh() <= 0:
                    if self._was_drained():
                        log.warning("%s was drained; not registering again", self.instance_id)
                        self.drained = True
                        return
                    # The lease expired while etcd was out of reach: the keys are
                    # gone, so register again under a new lease.
                    log.warning("registration of %s lapsed; registering again", self.instance_id)
                    self._register()
            except EtcdError as exc:
                # etcd briefly unreachable: keep trying; the lease may still be alive.
                log.warning("registry keep-alive for %s failed: %s", self.instance_id, exc)
                wait = min(interval, RETRY_AFTER_FAILURE)

    def _was_drained(self) -> bool:
        return self.etcd.get(drained_key(self.instance.backend, self.instance_id)) is not None

    def stop(self) -> bool:
        """Leave now: stop the keep-alive and revoke the lease, so both keys vanish at once.

        Returns True when this revoked a live registration (False: it had
        already gone, e.g. drained, or etcd cannot be reached, in which case
        the keys disappear when the TTL runs out).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
            self._thread = None
        with self._lock:
            lease, self.lease = self.lease, None
        if lease is None or self.drained:
            return False
        try:
            if lease.revoke():
                return True
            # The lease was gone already: drained by someone (``deregister``), who waited for
            # Traefik to drop us, so there is nothing left to wait for; else it lapsed.
            self.drained = self._was_drained()
            return not self.drained
        except EtcdError as exc:
            log.warning(
                "could not revoke %s's lease (%s); it expires in %ss",
                self.instance_id,
                exc,
                self.ttl,
            )
            return False

    def __enter__(self) -> Registration:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def instances(etcd: Etcd, backend: str | None = None) -> list[Instance]:
    """Every registered instance (of ``backend``, if given), sorted by backend then id."""
    entries, _ = etcd.get_prefix(instances_prefix(backend))
    found = (Instance.from_key(key, value) for key, value in entries.items())
    return sorted((i for i in found if i is not None), key=lambda i: (i.backend, i.instance_id))


def deregister(etcd: Etcd, backend: str, url: str) -> list[str]:
    """Take every registration of ``backend`` at ``url`` out now, for good; return their ids.

    Each gets a drained marker first (so its keep-alive does not register it
    again), then its lease is revoked: both of its keys vanish at once.
    """
    entries, _ = etcd.get_prefix_entries(instances_prefix(backend))
    gone = []
    for key, entry in entries.items():
        instance = Instance.from_key(key, entry.value)
        if instance is None or instance.url != url:
            continue
        marker = etcd.lease(DRAINED_TTL)
        etcd.put(drained_key(backend, instance.instance_id), "1", marker)
        if entry.lease:
            try:
                Lease(etcd, entry.lease, 0).revoke()
            except EtcdError:
                pass  # expired meanwhile: its keys are gone already
        gone.append(instance.instance_id)
    return gone


def probe(instance: Instance, timeout: float = 1.0) -> bool:
    """True when ``instance``'s health URL answers 2xx within ``timeout`` seconds.

    A pooled keep-alive connection the instance closed meanwhile (gunicorn
    closes idle ones after 2 s) fails as a ProtocolError without the request
    reaching it: that one is tried again, once, on a new connection. A
    timeout or a refused connection is an answer and is not retried.
    """
    for attempt in (1, 2):
        try:
            response = _PROBES.request("GET", instance.health_url, timeout=timeout, redirect=False)
        except urllib3.exceptions.ProtocolError:
            if attempt == 2:
                return False
            continue
        except urllib3.exceptions.HTTPError:
            return False
        return 200 <= response.status < 300
    return False


# Health probes share one pool of keep-alive connections (urllib3, which the etcd
# client loads anyway: a routing command never pays for importing requests).
_PROBES = urllib3.PoolManager(num_pools=32, maxsize=4, retries=False)


def healthy_instances(
    etcd: Etcd,
    backend: str,
    check: bool = True,
    timeout: float = 1.0,
    probe: Callable[[Instance, float], bool] = probe,
) -> list[Instance]:
    """The registered instances of ``backend`` that answer their health check.

    ``check=False`` trusts the registry alone (a live lease means alive).
    Probes run in parallel so one hung instance costs ``timeout``, not N times it.
    """
    found = instances(etcd, backend)
    if not check or not found:
        return found
    results: dict[str, bool] = {}

    def run(instance: Instance) -> None:
        results[instance.instance_id] = probe(instance, timeout)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 1)
    return [i for i in found if results.get(i.instance_id)]
