"""``strangler compare``: send the same requests to the monolith and a service, show what differs.

Both backends are asked directly (their registered instances, or the URLs
given), never through Traefik. Exit status: 0 no real differences, 1
differences, 2 error (one line on stderr) — so it can gate a CI job.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from router.etcd import Etcd
from router.keys import priority
from strangler import options
from strangler.compare import render
from strangler.compare.diff import DEFAULT_RULE, Rule
from strangler.compare.oneoff import CompareError, Outcome, backend_url, compare_one
from strangler.compare.requests_file import (
    SAFE_METHODS,
    Request,
    RequestsFile,
    parse_header,
    parse_request_line,
    read_requests,
)
from strangler.plan import Endpoint, Plan, PlanError, load_plan
from strangler.plan.cli import plan_option
from strangler.routing.cli import NoStackRunning, stack_url

_PARAM = re.compile(r"<(?:(path):)?[A-Za-z_]\w*>")


MAX_FILE_BYTES = 256 * 2**20  # a requests file or HAR is read whole: no more than this
MAX_REQUESTS = 100_000  # requests in one --file run


class CompareFailed(click.ClickException):
    """A comparison that could not run: exit status 2, one line (1 means "they differ")."""

    exit_code = 2


def endpoint_for(plan: Plan | None, method: str, path: str) -> Endpoint | None:
    """The plan endpoint a concrete request falls under (the most specific one), or None.

    ``GET /api/users/1`` -> ``GET /api/users/<id>``; HEAD follows GET's
    endpoint; a ``PREFIX`` endpoint matches every method under its path.
    """
    if plan is None:
        return None
    wanted = "GET" if method == "HEAD" else method
    found = [ep for ep in plan.endpoints() if _falls_under(ep, wanted, path)]
    return max(found, key=priority, default=None)


def _falls_under(endpoint: Endpoint, method: str, path: str) -> bool:
    if endpoint.is_prefix:
        return path.startswith(endpoint.path)
    return endpoint.method == method and _template(endpoint.path).fullmatch(path) is not None


def _template(template: str) -> re.Pattern:
    # split() alternates literal text and the optional "path" converter of each placeholder
    parts = _PARAM.split(template)
    return re.compile("".join(
        re.escape(part) if n % 2 == 0 else ".+" if part == "path" else "[^/]+"
        for n, part in enumerate(parts)
    ))


def _load(plan_path: Path, urls_given: bool) -> Plan | None:
    # Two URLs make a plan optional: compare any two servers with default rules.
    if urls_given and not plan_path.exists():
        return None
    try:
        return load_plan(plan_path)
    except PlanError as exc:
        raise CompareFailed(str(exc)) from None


def _requests(spec: str | None, file: Path | None, headers: Sequence[str], data: str | None,
              token: str | None) -> RequestsFile:
    if (spec is None) == (file is None):
        raise CompareFailed('give one request ("GET /api/users/1") or --file FILE, not both or neither')
    try:
        if file is not None:
            if file.stat().st_size > MAX_FILE_BYTES:
                raise CompareFailed(f"{file}: over {MAX_FILE_BYTES // 2**20} MiB; split it, or record "
                                    "a shorter session")
            parsed = read_requests(file.read_text(encoding="utf-8"))
            if len(parsed.requests) > MAX_REQUESTS:
                raise CompareFailed(f"{file}: {len(parsed.requests):,} requests; at most {MAX_REQUESTS:,} "
                                    "in one run (each goes to both backends): split it")
            if not parsed.requests:
                skipped = f" but {len(parsed.websockets)} WebSocket entries" if parsed.websockets else ""
                raise CompareFailed(f"{file}: no requests in it{skipped}")
        else:
            parsed = RequestsFile([parse_request_line(spec)], "text")
        found = parsed.requests
        extra = [parse_header(h, "--header") for h in headers]
    except OSError as exc:
        raise CompareFailed(f"{file}: cannot read it: {exc.strerror}") from None
    except ValueError as exc:
        raise CompareFailed(f"{file}: {exc}" if file else str(exc)) from None
    if token:
        extra.append(("Authorization", f"Bearer {token}"))
    body = None
    if data is not None:
        try:
            json.loads(data)
        except ValueError as exc:
            raise CompareFailed(f"--data is not JSON ({exc}); pass a JSON document") from None
        body = data.encode()
        extra.append(("Content-Type", "application/json"))
    return parsed._replace(requests=[_with(r, extra, body) for r in found])


class Skipped:
    """What a recording held besides the service's requests: WebSockets, other backends' endpoints."""

    def __init__(self, websockets: Sequence[int] = ()) -> None:
        self.websockets = list(websockets)
        self.elsewhere: dict[str, list[int]] = {}  # endpoint (or METHOD /path) -> entries

    def add(self, label: str, request: Request) -> None:
        """Note *request* as skipped under *label*."""
        self.elsewhere.setdefault(label, []).append(request.line)

    def lines(self, against: str | None) -> list[str]:
        """One line per kind of skipped request, for people."""
        out = []
        if self.websockets:
            out.append(f"skipped {len(self.websockets)} WebSocket entr{'y' if len(self.websockets) == 1 else 'ies'}"
                       f" (entry {', '.join(map(str, self.websockets))}): nothing to compare")
        if self.elsewhere:
            count = sum(len(v) for v in self.elsewhere.values())
            out.append(f"skipped {count} request(s) not on {against}'s endpoints "
                       "(--every-request compares them too):")
            out += [f"  {label} ({len(entries)})" for label, entries in self.elsewhere.items()]
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for ``--json``."""
        return {"websockets": self.websockets,
                "elsewhere": [{"endpoint": k, "entries": v} for k, v in self.elsewhere.items()]}


def _on_service(plan: Plan | None, against: str | None, parsed: RequestsFile,
                every: bool) -> tuple[list[Request], Skipped]:
    """A recording's requests that fall on *against*'s endpoints, and what was left out.

    Only a HAR is filtered (a browser records everything a page loads); a
    requests file someone wrote is compared as written, as is any file with
    ``--every-request`` or without a plan and a service to filter by.
    """
    skipped = Skipped(parsed.websockets)
    if parsed.kind != "har" or every or plan is None or against is None:
        return parsed.requests, skipped
    kept = []
    for one in parsed.requests:
        endpoint = endpoint_for(plan, one.method, one.path)
        if endpoint is not None and plan.owner(endpoint) == against:
            kept.append(one)
        else:
            skipped.add(str(endpoint) if endpoint else f"{one.method} {one.path}", one)
    return kept, skipped


def _with(request: Request, extra: list[tuple[str, str]], body: bytes | None) -> Request:
    # The request's own headers win over the command line's.
    have = {name.lower() for name, _ in request.headers}
    headers = request.headers + tuple((n, v) for n, v in extra if n.lower() not in have)
    return request._replace(headers=headers, body=request.body if request.body is not None else body)


def _refuse_writes(requests: Sequence[Request], allow_writes: bool) -> None:
    unsafe = [r for r in requests if r.method not in SAFE_METHODS]
    if unsafe and not allow_writes:
        where = f" ({unsafe[0].where})" if unsafe[0].line else ""
        raise CompareFailed(f"{unsafe[0].method}{where} would write twice (once per backend); "
                            "pass --allow-writes to compare it anyway")


def _base_urls(plan: Plan | None, against: str | None, monolith_url: str | None,
               candidate_url: str | None, etcd_url: str | None) -> tuple[list[str], list[str]]:
    if against is None and candidate_url is None:
        raise CompareFailed("say which backend to compare with: --against SERVICE (or --candidate-url URL)")
    monolith = plan.monolith if plan else "monolith"
    names = [monolith, against or "candidate"]
    if plan is not None and against is not None:
        try:
            plan.backend(against)
        except PlanError as exc:
            raise CompareFailed(str(exc)) from None
    urls = [monolith_url, candidate_url]
    if None in urls:
        if plan is None:
            raise CompareFailed("no plan to find the backends in; pass --monolith-url and --candidate-url")
        try:
            etcd = Etcd(etcd_url or stack_url(plan, "etcd"))
        except NoStackRunning as exc:
            raise CompareFailed(exc.message) from None
        for n, flag in enumerate(("--monolith-url", "--candidate-url")):
            if urls[n] is None:
                try:
                    urls[n] = backend_url(etcd, names[n])
                except CompareError as exc:
                    raise CompareFailed(f"{exc} with {flag}") from None
    return names, [u.rstrip("/") for u in urls]


def _rule(plan: Plan | None, endpoint: Endpoint | None) -> Rule:
    if plan is None:
        return DEFAULT_RULE
    return Rule.from_plan(plan.compare_rule(endpoint) if endpoint else plan.compare_default)


def _console() -> Console:
    # Piped output (CI logs, tests) gets a wide fixed width instead of an 80-column wrap.
    return Console(width=None if sys.stdout.isatty() else 180)


@click.command()
@click.argument("request", required=False, metavar='["METHOD /path?query"]')
@click.option("--against", metavar="SERVICE", help="The backend to compare the monolith with.")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
              help="Requests to run: one per line, JSONL or HAR (see docs/compare.md).")
@click.option("--header", "headers", multiple=True, metavar="'Name: value'",
              help="A header to send (repeatable).")
@click.option("--data", metavar="JSON", help="A JSON body to send (sets Content-Type).")
@click.option("--token", metavar="TOKEN", help="Send 'Authorization: Bearer TOKEN'.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--allow-writes", is_flag=True,
              help="Allow POST/PUT/PATCH/DELETE, which then write on both backends.")
@click.option("--monolith-url", metavar="URL", help="Ask this base URL instead of the registered monolith.")
@click.option("--candidate-url", metavar="URL", help="Ask this base URL instead of the registered service.")
@click.option("--etcd", "etcd_url", envvar="STRANGLER_ETCD", metavar="URL", show_envvar=True,
              help="etcd's client URL (default: the running stack's, else the plan's etcd_port).")
@click.option("--timeout", type=options.WAIT, default=10.0, show_default=True,
              help="Seconds to wait for each answer.")
@click.option("--every-request", is_flag=True,
              help="From a HAR, compare every request, not only those on SERVICE's endpoints.")
@plan_option
def compare(request: str | None, against: str | None, file: Path | None, headers: tuple[str, ...],
            data: str | None, token: str | None, as_json: bool, allow_writes: bool,
            monolith_url: str | None, candidate_url: str | None, etcd_url: str | None,
            timeout: float, every_request: bool, plan_path: Path) -> None:
    """Send the same request to the monolith and to SERVICE directly, and show what differs.

    REQUEST is "GET /api/users/1" (quote it); --file runs many and prints a
    table per endpoint. From a browser's HAR only the requests on SERVICE's
    endpoints are compared, and WebSockets are skipped. The plan's [compare]
    rules say what to ignore. Exit status: 0 no real differences, 1
    differences, 2 error.
    """
    plan = _load(plan_path, monolith_url is not None and candidate_url is not None)
    parsed = _requests(request, file, headers, data, token)
    wanted, skipped = _on_service(plan, against, parsed, every_request)
    if not wanted:
        raise CompareFailed(f"{file}: none of its {len(parsed.requests)} request(s) falls on {against}'s "
                            "endpoints; pass --every-request to compare them all")
    _refuse_writes(wanted, allow_writes)
    names, urls = _base_urls(plan, against, monolith_url, candidate_url, etcd_url)
    outcomes: list[tuple[str, Outcome]] = []
    for one in wanted:
        endpoint = endpoint_for(plan, one.method, one.path)
        try:
            out = compare_one(one, urls[0], urls[1], _rule(plan, endpoint), timeout=timeout)
        except CompareError as exc:
            where = f"{one.where}: " if one.line else ""
            raise CompareFailed(f"{where}{exc}") from None
        outcomes.append((str(endpoint) if endpoint else f"{one.method} {one.path}", out))
    _report(outcomes, names, urls, plan, as_json, single=file is None, skipped=skipped,
            against=against)
    if any(not out.same for _, out in outcomes):
        raise click.exceptions.Exit(1)


def _report(outcomes: list[tuple[str, Outcome]], names: list[str], urls: list[str],
            plan: Plan | None, as_json: bool, single: bool, skipped: Skipped,
            against: str | None) -> None:
    if as_json:
        results = [render.outcome_json(ep, out, names, urls) for ep, out in outcomes]
        click.echo(json.dumps({
            "same": all(out.same for _, out in outcomes),
            "requests": len(outcomes),
            "differing": sum(1 for _, out in outcomes if not out.same),
            "endpoints": render.summarize(outcomes),
            "results": results,
            "skipped": skipped.to_json(),
        }, indent=2, default=str))
        return
    for line in skipped.lines(against):
        click.echo(line)
    console = _console()
    if single:
        endpoint, out = outcomes[0]
        rule = _rule(plan, endpoint_for(plan, out.request.method, out.request.path))
        render.print_outcome(console, out, names, urls, rule.headers)
    else:
        render.print_summary(console, outcomes)
