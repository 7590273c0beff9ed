"""PURE: which endpoint template a concrete request belongs to, as Traefik would route it.

The comparator receives concrete requests (``GET /api/users/7?x=1``) and
counts them per endpoint (``GET /api/users/<id>``). Matching follows the
router rules of :mod:`router.keys`: a GET template also matches HEAD, a
``PREFIX`` endpoint matches every method below its path, and of several
matching templates the one with the highest router priority wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from router.keys import PARAM, Endpoint, priority


def template_regex(endpoint: Endpoint) -> re.Pattern[str]:
    """The compiled regex matching every concrete path of ``endpoint``'s template."""
    if endpoint.is_prefix:
        return re.compile("^" + re.escape(endpoint.path))
    parts = []
    for segment in endpoint.path.split("/"):
        param = PARAM.match(segment)
        if param:
            parts.append(".+" if param.group("conv") == "path" else "[^/]+")
        else:
            parts.append(re.escape(segment))
    return re.compile("^" + "/".join(parts) + "$")


class Matcher:
    """Maps (method, path) to the endpoint template Traefik routes it by; build once, match often."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        ordered = sorted(set(endpoints), key=priority, reverse=True)
        self._table = [(e, template_regex(e)) for e in ordered]

    def __len__(self) -> int:
        return len(self._table)

    def match(self, method: str, path: str) -> Endpoint | None:
        """The best-matching endpoint for ``method path`` (no query), or None."""
        method = method.upper()
        for endpoint, regex in self._table:
            if endpoint.is_prefix or endpoint.method == method or (
                endpoint.method == "GET" and method == "HEAD"
            ):
                if regex.match(path):
                    return endpoint
        return None
