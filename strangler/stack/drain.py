"""Taking one backend instance out of service without failing a request.

The order (the same for ``strangler scale``, upgrades and ``down``):

1. **deregister**: mark the instance drained and revoke its lease
   (:func:`router.registry.deregister`), so its keys vanish and it does not
   register again;
2. **wait until Traefik's API no longer lists it** in the backend's load
   balancer (bounded): from then on no new request goes there;
3. **stop it**: SIGTERM, on which gunicorn stops accepting and lets the
   requests in flight finish within its graceful timeout; SIGKILL when the
   grace period runs out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from router import registry
from router.etcd import Etcd, EtcdError
from router.traefik import TraefikAPI, TraefikError

DROP_WAIT = 10.0  # seconds to wait for Traefik to drop a deregistered server
GRACE = 10.0  # seconds between SIGTERM and SIGKILL


def listed(api: TraefikAPI, backend: str, url: str) -> bool:
    """True while Traefik's API lists ``url`` among ``backend``'s servers (True if it cannot tell)."""
    try:
        service = api.service(backend) or {}
    except TraefikError:
        return True
    servers = (service.get("loadBalancer") or {}).get("servers") or []
    return url in [server.get("url") for server in servers]


def drain(
    client: Etcd | None,
    api: TraefikAPI | None,
    backend: str,
    url: str,
    stop: Callable[[float], str],
    *,
    drop_wait: float = DROP_WAIT,
    grace: float = GRACE,
    service: str | None = None,
) -> str:
    """Deregister, wait for Traefik to drop ``url``, then ``stop(grace)``; return how it ended.

    ``service``: the Traefik service listing it (default: ``backend``; a blue/green set's)."""
    if client is not None:
        try:
            registry.deregister(client, backend, url)
        except EtcdError:
            pass  # etcd gone (a stopping stack): the lease runs out on its own
    if api is not None:
        deadline = time.monotonic() + drop_wait
        while listed(api, service or backend, url) and time.monotonic() < deadline:
            time.sleep(0.05)
    return stop(grace)


def in_parallel(items: list, work: Callable[[Any], tuple]) -> list[tuple]:
    """Run ``work`` on every item in its own thread (graceful stops overlap); results in order."""
    results: list[tuple | None] = [None] * len(items)

    def run(i: int) -> None:
        results[i] = work(items[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]
