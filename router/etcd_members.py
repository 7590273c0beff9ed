"""The members of one etcd cluster, and one request to one of them over its v3 JSON gateway.

``router.etcd`` builds on this: it decides which member to try next and what
a failure means for the call it is making. This module only knows URLs, the
order to try them in, and how a request ended:

- it came back (any HTTP status): returned;
- it certainly never reached etcd, or etcd certainly did not act on it
  (connection refused, connect timeout, "no leader", not an etcd at all):
  ``NotSent``;
- it may have reached etcd, which then failed to answer (read timeout,
  connection reset mid-request, etcd's own "request timed out"): ``Unsure``.

Transport: urllib3, the HTTP layer under requests, with one keep-alive pool
per member (docs/architecture.md, "The etcd client", says why not etcd3gw,
requests or gRPC).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError

DEFAULT_URL = "http://127.0.0.1:2379"
# A member that failed is tried after the others for this long, doubling per failure up
# to the cap; then it is first in line again, so a member that comes back is used again.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 4.0
# Connecting is quick when a member is up; don't let a dead host eat the whole call timeout.
CONNECT_TIMEOUT = 2.0
# etcd's own refusals that mean "not acted on" / "maybe acted on" (gRPC status via the gateway).
_NOT_APPLIED = ("no leader", "not capable", "too many requests")
_MAYBE_APPLIED = ("request timed out", "leader changed", "timed out due to")


class NotSent(Exception):
    """The request certainly had no effect on etcd: try another member, whatever it was."""


class Unsure(Exception):
    """The request may have reached etcd, which failed before answering."""


def normalise(url: str, *, credentials_hint: str = "") -> str:
    """PURE: ``scheme://host:port`` for one member URL (scheme http and port 2379 by default).

    Raises ValueError for a URL without a host or with credentials in it
    (they would end up in command lines and logs; ``credentials_hint`` says where they go).
    """
    raw = url.strip()
    parts = urlsplit(raw if "://" in raw else f"http://{raw}")
    if not parts.hostname:
        raise ValueError(f"etcd URL {url!r} has no host; use e.g. {DEFAULT_URL}")
    if parts.username or parts.password:
        raise ValueError(f"put etcd credentials in {credentials_hint or 'the environment'}, not in the URL")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{parts.port or 2379}"


def parse_endpoints(urls: str | Iterable[str], *, credentials_hint: str = "") -> tuple[str, ...]:
    """PURE: the member URLs from one URL, a comma-separated list (as in ``STRANGLER_ETCD``) or a list.

    Order is kept (it is the order members are preferred in); duplicates go.
    Raises ValueError when no URL is left.
    """
    items = urls.split(",") if isinstance(urls, str) else [u for url in urls for u in url.split(",")]
    found = [normalise(u, credentials_hint=credentials_hint) for u in items if u.strip()]
    if not found:
        raise ValueError(f"no etcd URL given; use e.g. {DEFAULT_URL}")
    return tuple(dict.fromkeys(found))


class Members:
    """The members' URLs, which of them failed lately, and a keep-alive pool to each.

    Safe to share between threads (urllib3's pools are; the failure record is locked).
    """

    def __init__(self, urls: tuple[str, ...], timeout: float) -> None:
        self.urls = urls
        self.last = urls[0]  # the member that answered last
        self._timeout = urllib3.Timeout(connect=min(timeout, CONNECT_TIMEOUT), read=timeout)
        # retries=False: every retry decision is ours (a POST retried blindly may apply twice).
        self._pool = urllib3.PoolManager(num_pools=max(len(urls), 1), maxsize=8, retries=False)
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._down_until: dict[str, float] = {}

    def order(self) -> list[str]:
        """Every member once: those not failed lately in the given order, then the rest.

        A failed member keeps its turn, last, so a call never gives up untried.
        """
        now = time.monotonic()
        with self._lock:
            resting = {url: until for url, until in self._down_until.items() if until > now}
        ready = [url for url in self.urls if url not in resting]
        return ready + sorted(resting, key=resting.__getitem__)

    def post(self, url: str, path: str, payload: Mapping[str, Any],
             headers: Mapping[str, str]) -> tuple[int, Any]:
        """POST ``payload`` to ``url``'s gateway at ``/v3/<path>``; returns (status, JSON body).

        Raises NotSent or Unsure (module docstring), and records the outcome for order().
        """
        try:
            answer = self._answer(url, path, payload, headers)
        except (NotSent, Unsure):
            self._failed(url)
            raise
        self._answered(url)
        return answer

    def _answer(self, url: str, path: str, payload: Mapping[str, Any],
                headers: Mapping[str, str]) -> tuple[int, Any]:
        try:
            response = self._pool.request(
                "POST", f"{url}/v3/{path}", body=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json", **headers}, timeout=self._timeout,
            )
        except ConnectTimeoutError as exc:  # also NewConnectionError: refused, no route, no such host
            raise NotSent(f"{url}: {exc}") from exc
        except HTTPError as exc:  # read timeout, reset or closed mid-request, TLS failure
            raise Unsure(f"{url}: {exc}") from exc
        try:
            body = json.loads(response.data)
        except ValueError as exc:  # something answers there, but not etcd's gateway
            raise NotSent(f"{url} answered {response.status} but is not an etcd") from exc
        if response.status != 200 and isinstance(body, dict):
            message = str(body.get("message") or body.get("error") or "")
            if any(why in message for why in _NOT_APPLIED):
                raise NotSent(f"{url}: {message}")
            if any(why in message for why in _MAYBE_APPLIED):
                raise Unsure(f"{url}: {message}")
        return response.status, body

    def _failed(self, url: str) -> None:
        with self._lock:
            failures = self._failures.get(url, 0) + 1
            self._failures[url] = failures
            backoff = min(FIRST_BACKOFF * 2 ** (failures - 1), MAX_BACKOFF)
            self._down_until[url] = time.monotonic() + backoff

    def _answered(self, url: str) -> None:
        with self._lock:
            self._failures.pop(url, None)
            self._down_until.pop(url, None)
        self.last = url
