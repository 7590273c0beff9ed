"""Where ``strangler diffs`` reads the comparator's report: over HTTP, else its file.

First the comparator itself (``GET /_shadow/diffs``, strangler/shadow/report.py):
the one named with ``--comparator``, else every one registered in etcd, in
turn. The request carries the mirror secret read from etcd, so reading needs
what routing needs: etcd's address (and, under compose, its login). This
works from any container or machine that reaches etcd and the comparator.

When no comparator answers (the stack is down, or was never started here) the
run dir's ``shadow.sqlite`` is read instead, as it was left: that is what
someone looking at a finished session expects. The result says which source
was read, and why the comparator was not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

from router import registry, table
from router.etcd import Etcd, EtcdError
from router.keys import MIRROR_HEADER
from strangler.shadow.report import PATH
from strangler.shadow.store import COUNTERS, read_report
from strangler.shadow.worker import COMPARATOR

_HTTP = urllib3.PoolManager(num_pools=4, retries=False)


class Unreachable(Exception):
    """No comparator answered; the message says what was tried and why it failed."""


class NoSource(Exception):
    """Neither a comparator nor a results file: the message says what to do."""


@dataclass
class Report:
    """The entries ``strangler diffs`` prints, and which source they came from."""

    entries: list[dict[str, Any]]
    source: str  # "the comparator at http://…" or the file's path
    live: bool  # True: from a running comparator; False: from the file
    why_not_live: str = ""  # with live False: why no comparator was read


def fetch(url: str, secret: str, endpoint: str | None, examples: int, timeout: float = 5.0) -> list[dict]:
    """The report of the comparator at ``url``; Unreachable with the reason when it does not give one."""
    query = {"examples": examples, **({"endpoint": endpoint} if endpoint else {})}
    target = f"{url.rstrip('/')}{PATH}?{urlencode(query)}"
    try:
        answer = _HTTP.request("GET", target, headers={MIRROR_HEADER: secret}, timeout=timeout,
                               redirect=False)
    except urllib3.exceptions.HTTPError as exc:
        raise Unreachable(f"the comparator at {url} did not answer ({type(exc).__name__})") from None
    if answer.status != 200:
        raise Unreachable(f"the comparator at {url} answered {answer.status} to {PATH}")
    try:
        entries = json.loads(answer.data)["endpoints"]
    except (ValueError, KeyError, TypeError):
        entries = None
    if not _report_shaped(entries):  # another version, or not a comparator: not printed half-way
        raise Unreachable(f"the comparator at {url} gave no report at {PATH}")
    return entries


def _report_shaped(entries: Any) -> bool:
    """PURE: True when ``entries`` has the shape ``strangler diffs`` prints (strangler/shadow/report.py)."""
    shapes = {"endpoint": str, "noise": list, "noise_rates": dict, "patterns": list, "examples": list}
    return isinstance(entries, list) and all(
        isinstance(e, dict) and all(isinstance(e.get(k), t) for k, t in shapes.items())
        and all(isinstance(e.get(c), int) for c in COUNTERS)
        and (e.get("diff_rate") is None or isinstance(e["diff_rate"], (int, float)))
        and all(isinstance(p, dict) for p in e["patterns"]) and all(isinstance(x, dict) for x in e["examples"])
        for e in entries)


def from_comparators(etcd_url: str | None, comparator_url: str | None, endpoint: str | None,
                     examples: int) -> tuple[list[dict], str]:
    """``(entries, url)`` from the first comparator that answers; Unreachable saying why none did."""
    if not etcd_url:
        raise Unreachable("no etcd to find the comparator in (no stack running here; pass --etcd URL)")
    etcd = Etcd(etcd_url, timeout=3.0)
    try:
        secret = table.load_options(etcd).mirror_secret
        urls = [comparator_url] if comparator_url else [i.url for i in registry.instances(etcd, COMPARATOR)]
    except EtcdError as exc:
        raise Unreachable(f"etcd not answering at {etcd_url} ({' '.join(str(exc).split())})") from None
    if not secret:
        raise Unreachable(f"no mirror secret in etcd at {etcd_url}: nothing was ever shadowed there")
    if not urls:
        raise Unreachable(f"no comparator registered in etcd at {etcd_url}")
    reasons = []
    for url in urls:
        try:
            return fetch(url, secret, endpoint, examples), url
        except Unreachable as exc:
            reasons.append(str(exc))
    raise Unreachable("; ".join(reasons))


def read(etcd_url: str | None, comparator_url: str | None, store: Path, endpoint: str | None,
         examples: int) -> Report:
    """The report from a comparator, else from ``store`` (only when no comparator was named);
    NoSource when neither gives one."""
    try:
        entries, url = from_comparators(etcd_url, comparator_url, endpoint, examples)
        return Report(entries, f"the comparator at {url}", live=True)
    except Unreachable as exc:
        reason = str(exc)
    if comparator_url:  # asked for that comparator: its file would be a different answer
        raise NoSource(reason)
    if not store.is_file():
        raise NoSource(f"{reason}, and there is no results file at {store}: start the stack "
                       "(strangler up) and shadow an endpoint, or pass --etcd URL / --comparator URL")
    return Report(read_report(store, endpoint, examples=examples), str(store), live=False,
                  why_not_live=reason)
