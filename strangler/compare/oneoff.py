"""Send one request to two backends directly (bypassing Traefik) and diff the answers.

The I/O edge of ``strangler compare``: find a backend's healthy instance in
the registry (etcd), send the same request to both base URLs at once, and
hand the two :class:`~strangler.compare.diff.Answer` objects to the engine.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import requests

from router.etcd import Etcd, EtcdError
from router.registry import healthy_instances
from strangler.compare.diff import DEFAULT_RULE, Answer, Difference, Rule, diff
from strangler.compare.requests_file import Request

__all__ = ["MAX_READ_BYTES", "CompareError", "Outcome", "backend_url", "compare_one", "fetch"]

MAX_READ_BYTES = 64 * 1024 * 1024  # read no more of an answer than this
_CHUNK = 256 * 1024


class CompareError(Exception):
    """A comparison that could not be made (backend unreachable, none registered): one line."""


class Outcome(NamedTuple):
    """One request compared: both answers, the real differences, and those the rules ignored."""

    request: Request
    left: Answer
    right: Answer
    differences: list[Difference]
    ignored: list[Difference]

    @property
    def same(self) -> bool:
        """True when no real difference is left."""
        return not self.differences


def backend_url(etcd: Etcd, backend: str, timeout: float = 1.0) -> str:
    """The base URL of a healthy registered instance of ``backend``.

    Raises CompareError naming the backend when etcd is unreachable or no
    instance answers its health check.
    """
    try:
        found = healthy_instances(etcd, backend, timeout=timeout)
    except EtcdError as exc:
        raise CompareError(f"cannot read the registry to find {backend}: {exc}") from None
    if not found:
        raise CompareError(
            f"no healthy instance of {backend} is registered; start it (strangler up) "
            f"or pass its URL"
        )
    return found[0].url.rstrip("/")


def fetch(base_url: str, request: Request, timeout: float = 10.0,
          max_bytes: int = MAX_READ_BYTES) -> tuple[Answer, bool]:
    """Send ``request`` to ``base_url``; the answer and whether its body was read whole.

    Redirects are not followed (they are part of the answer). Raises
    CompareError in one line when the backend cannot be reached.
    """
    url = base_url.rstrip("/") + request.target
    try:
        with requests.request(request.method, url, headers=dict(request.headers), data=request.body,
                              timeout=timeout, allow_redirects=False, stream=True) as response:
            body, whole = _read(response, max_bytes)
            return Answer(response.status_code, dict(response.headers), body), whole
    except requests.Timeout:
        raise CompareError(f"{request.method} {url} failed: no answer within {timeout} s") from None
    except requests.ConnectionError:
        raise CompareError(f"{request.method} {url} failed: cannot connect; is it running?") from None
    except requests.RequestException as exc:
        raise CompareError(f"{request.method} {url} failed: {type(exc).__name__}") from None


def _read(response: requests.Response, max_bytes: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    for chunk in response.iter_content(_CHUNK):
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            return b"".join(chunks)[:max_bytes], False
    return b"".join(chunks), True


def compare_one(request: Request, left_url: str, right_url: str, rule: Rule = DEFAULT_RULE, *,
                timeout: float = 10.0, max_bytes: int = MAX_READ_BYTES) -> Outcome:
    """Send ``request`` to both base URLs at once and diff the answers under ``rule``.

    ``ignored`` lists what the rule's ignore paths left out, so people see
    that the rules did something. Raises CompareError if either side fails.
    """
    with ThreadPoolExecutor(2) as pool:
        sides = [pool.submit(fetch, url, request, timeout, max_bytes) for url in (left_url, right_url)]
        (left, left_whole), (right, right_whole) = (side.result() for side in sides)
    found = diff(left, right, rule)
    every = diff(left, right, rule._replace(ignore=()))
    real = {(d.path, d.kind) for d in found}
    ignored = [d for d in every if (d.path, d.kind) not in real and d.kind != "truncated"]
    if not (left_whole and right_whole):
        found.append(Difference("body", "truncated", "truncated",
                                f"an answer is over {max_bytes} bytes; only that much was read", None))
    return Outcome(request, left, right, found, ignored)
