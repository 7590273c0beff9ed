"""The one HTTP client services use to call each other: through the load balancer, with retries.

Paths are resolved against the load balancer's URL (``STRANGLER_LB_URL``),
so a service never knows where another runs: Traefik routes the call.

Retry rule (bounded by ``retries`` extra attempts AND by ``total_timeout``
seconds, with exponential back-off between attempts):

- every method is retried when the request provably never reached a
  backend: the connection to the load balancer was refused or its connect
  timed out, or the load balancer answered 502 (it could not pass the
  request on) or 503 (no backend available, or the backend refused to
  serve it);
- idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) are also retried on
  504 and on errors after the request was sent (read timeout, connection
  reset); POST is not, since a backend may already have acted on it.

When the callee stays unavailable, :class:`ServiceUnavailable` is raised;
``extracted.common.service.make_app`` answers it with 503 ``{"error": ...}``.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3.exceptions

from router.keys import IDEMPOTENT

logger = logging.getLogger(__name__)

NOT_PASSED_ON = frozenset({502, 503})  # the request never reached a backend
RETRY_IF_IDEMPOTENT = frozenset({504})


class ServiceUnavailable(Exception):
    """A service the caller needs did not answer (after retries); maps to a 503."""


def _never_sent(exc: requests.RequestException) -> bool:
    """Tell whether *exc* proves the request never left for a backend (connect failed)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # urllib3's NewConnectionError (refused, unreachable) is a ConnectTimeoutError
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


def service_of(path: str) -> str:
    """PURE: the service a path belongs to, for error messages (``/internal/users/1`` → users)."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if len(parts) >= 2 and parts[0] in ("internal", "api"):
        return parts[1]
    return parts[0] if parts else "the service"


class LBClient:
    """Calls other services through the load balancer at *base_url*; safe to share between threads.

    *retries* extra attempts at most (so ``retries + 1`` in all), sleeping
    ``backoff * 2**n`` (at most *max_backoff*) between them; each attempt
    waits at most *timeout* seconds, and no attempt starts (or lasts) past
    *total_timeout* seconds after the call began.
    """

    def __init__(
        self,
        base_url: str,
        *,
        # 0.1+0.2+0.4+0.8+1+1+1+1 s = 5.5 s of back-off: longer than a service's
        # restart (measured 0.9 s idle, 2.3 s under load, 4-5 s on a 2-core machine
        # running three test workers), still inside total_timeout
        retries: int = 8,
        backoff: float = 0.1,
        max_backoff: float = 1.0,
        timeout: float = 5.0,
        total_timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.total_timeout = total_timeout
        self.session = requests.Session()

    def url(self, path: str) -> str:
        """PURE: *path* resolved against the load balancer (an absolute URL stays as it is)."""
        return urljoin(self.base_url, path)

    def request(
        self,
        method: str,
        path: str,
        *,
        forward_auth: bool = False,
        service: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send *method* *path* (kwargs as for ``requests``); return the backend's response.

        With *forward_auth*, the current Flask request's ``Authorization``
        header goes along. Raises :class:`ServiceUnavailable` naming
        *service* (default: guessed from the path) when it stays down.
        """
        method = method.upper()
        service = service or service_of(path)
        headers = {"Accept": "application/json", **(kwargs.pop("headers", None) or {})}
        if forward_auth:
            headers.update(_caller_authorization())
        url = self.url(path)
        deadline = time.monotonic() + self.total_timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                response = self.session.request(
                    method, url, headers=headers, timeout=min(self.timeout, max(remaining, 0.05)),
                    **kwargs,
                )
            except requests.RequestException as exc:
                retry = _never_sent(exc) or method in IDEMPOTENT
                why = f"{type(exc).__name__} calling {method} {path}"
                response = None
            else:
                status = response.status_code
                if status not in NOT_PASSED_ON and status not in RETRY_IF_IDEMPOTENT:
                    return response
                retry = status in NOT_PASSED_ON or method in IDEMPOTENT
                why = f"{method} {path} answered {status}"
            pause = min(self.backoff * 2**attempt, self.max_backoff)
            attempt += 1
            if not retry or attempt > self.retries or time.monotonic() + pause >= deadline:
                logger.warning("%s is unavailable: %s (after %d attempts)", service, why, attempt)
                raise ServiceUnavailable(f"{service} is unavailable: {why}; try again shortly")
            if response is not None:
                response.close()
            time.sleep(pause)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """``request("GET", path, ...)``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        """``request("POST", path, ...)``."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        """``request("PUT", path, ...)``."""
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        """``request("DELETE", path, ...)``."""
        return self.request("DELETE", path, **kwargs)


def _caller_authorization() -> dict[str, str]:
    from flask import has_request_context, request

    if has_request_context() and request.headers.get("Authorization"):
        return {"Authorization": request.headers["Authorization"]}
    return {}
