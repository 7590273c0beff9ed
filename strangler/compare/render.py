"""What ``strangler compare`` prints: two columns with differences marked, verdicts, a summary table.

Rows of the side-by-side view are aligned by JSON path (text bodies: by
line content); a line under a real difference is marked ``≠`` (red on the
left, green on the right), one the plan's rules ignored ``~`` (dim).
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from strangler.compare.diff import Answer, Difference, parse_path
from strangler.compare.oneoff import Outcome

__all__ = ["MAX_LINES", "outcome_json", "print_outcome", "print_summary", "summarize", "verdict"]

MAX_LINES = 300  # body lines shown per side
_DIFF, _IGNORED = "≠", "~"


class _Enough(Exception):
    """Raised when a side has produced MAX_LINES lines."""


def json_lines(value: Any, limit: int = MAX_LINES) -> list[tuple[tuple, str]]:
    """Pretty-printed JSON as ``(path tokens, line)`` pairs, at most ``limit`` lines."""
    out: list[tuple[tuple, str]] = []

    def emit(path: tuple, text: str, depth: int) -> None:
        out.append((path, "  " * depth + text))
        if len(out) >= limit:
            raise _Enough

    def walk(v: Any, path: tuple, depth: int, prefix: str, comma: str) -> None:
        pairs = list(v.items()) if isinstance(v, dict) else list(enumerate(v)) if isinstance(v, list) else None
        if not pairs:
            emit(path, prefix + json.dumps(v, ensure_ascii=False) + comma, depth)
            return
        emit(path, prefix + ("{" if isinstance(v, dict) else "["), depth)
        for n, (key, item) in enumerate(pairs):
            label = json.dumps(key, ensure_ascii=False) + ": " if isinstance(v, dict) else ""
            walk(item, (*path, key), depth + 1, label, "," if n < len(pairs) - 1 else "")
        emit(path + ("}",), ("}" if isinstance(v, dict) else "]") + comma, depth)

    try:
        walk(value, (), 0, "", "")
    except _Enough:
        pass
    return out


def _under(line_path: tuple, paths: Iterable[tuple]) -> bool:
    return any(len(p) <= len(line_path) and line_path[: len(p)] == p for p in paths)


def _tokens(found: Iterable[Difference]) -> list[tuple]:
    parsed = []
    for d in found:
        try:
            parsed.append(parse_path(d.path))
        except ValueError:
            continue  # status, headers.X, body:N are not JSON paths
    return parsed


def _parsed(answer: Answer) -> Any:
    try:
        return json.loads(answer.body) if answer.body.lstrip()[:1] in (b"{", b"[") else None
    except ValueError:
        return None


def _align(keys_a: Sequence, keys_b: Sequence) -> Iterable[tuple[str, int | None, int | None]]:
    """Pairs of row indexes (None: nothing on that side), aligned on equal keys."""
    matcher = difflib.SequenceMatcher(None, keys_a, keys_b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for n in range(max(i2 - i1, j2 - j1)):
            yield tag, (i1 + n if i1 + n < i2 else None), (j1 + n if j1 + n < j2 else None)


def _text(line: str | None, marked: bool, soft: bool, style: str) -> Text:
    return Text(line or "", style=style if marked else "dim" if soft else "")


def body_rows(out: Outcome) -> list[tuple[str, Text, Text]]:
    """The body as aligned rows: (marker, left line, right line)."""
    a, b = _parsed(out.left), _parsed(out.right)
    if a is None or b is None:  # text (or text against JSON): aligned on the lines themselves
        la = out.left.body[:200_000].decode("utf-8", "replace").splitlines()[:MAX_LINES]
        lb = out.right.body[:200_000].decode("utf-8", "replace").splitlines()[:MAX_LINES]
        changed = any(d.kind in ("text", "type") and d.path.startswith("body") for d in out.differences)
        return [(_DIFF if changed and tag != "equal" else "",
                 _text(None if i is None else la[i], changed and tag != "equal", False, "red"),
                 _text(None if j is None else lb[j], changed and tag != "equal", False, "green"))
                for tag, i, j in _align(la, lb)]
    left, right = json_lines(a), json_lines(b)
    real, ignored = _tokens(out.differences), _tokens(out.ignored)
    rows = []
    for _tag, i, j in _align([p for p, _ in left], [p for p, _ in right]):
        paths = [_strip(side[k][0]) for side, k in ((left, i), (right, j)) if k is not None]
        hit = any(_under(p, real) for p in paths if p)
        soft = not hit and any(_under(p, ignored) for p in paths if p)
        rows.append((_DIFF if hit else _IGNORED if soft else "",
                     _text(None if i is None else left[i][1], hit, soft, "red"),
                     _text(None if j is None else right[j][1], hit, soft, "green")))
    return rows


def _strip(path: tuple) -> tuple:
    return path[:-1] if path[-1:] == ("}",) else path


def verdict(out: Outcome) -> str:
    """One line: SAME or DIFFERENT, the request, and which patterns differ or were ignored."""
    if out.same:
        ignored = sorted({d.pattern for d in out.ignored})
        extra = f" ({len(out.ignored)} ignored by the plan's rules: {', '.join(ignored)})" if ignored else ""
        return f"SAME {out.request}: no real differences{extra}"
    patterns = list(dict.fromkeys(d.pattern for d in out.differences))
    return (f"DIFFERENT {out.request}: {len(out.differences)} difference(s) "
            f"({', '.join(patterns[:8])}{', ...' if len(patterns) > 8 else ''})")


def _describe(d: Difference) -> str:
    left = "(absent)" if d.kind == "extra" else json.dumps(d.left, ensure_ascii=False)
    right = "(absent)" if d.kind == "missing" else json.dumps(d.right, ensure_ascii=False)
    if d.kind == "truncated":
        return f"{d.path}: {d.left}"
    return f"{d.path}: {d.kind} {left} -> {right}"


def print_outcome(console: Console, out: Outcome, names: Sequence[str], urls: Sequence[str],
                  headers: Sequence[str]) -> None:
    """The side-by-side view of one request, its differences, and the verdict line."""
    grid = Table(title=str(out.request), show_lines=False, expand=False)
    grid.add_column("", no_wrap=True)
    grid.add_column(f"{names[0]} {urls[0]}", overflow="fold")
    grid.add_column(f"{names[1]} {urls[1]}", overflow="fold")
    flagged = {d.path for d in out.differences}
    mark = "status" in flagged
    grid.add_row("status" + (f" {_DIFF}" if mark else ""),
                 Text(str(out.left.status), style="red" if mark else ""),
                 Text(str(out.right.status), style="green" if mark else ""))
    for name in headers:
        mark = f"headers.{name}" in flagged
        grid.add_row(name + (f" {_DIFF}" if mark else ""),
                     Text(out.left.header(name) or "-", style="red" if mark else ""),
                     Text(out.right.header(name) or "-", style="green" if mark else ""))
    rows = body_rows(out)
    for n, (marker, left, right) in enumerate(rows):
        grid.add_row(("body " if n == 0 else "") + marker, left, right)
    console.print(grid)
    if len(rows) >= MAX_LINES:
        console.print(f"(body shown up to {MAX_LINES} lines)")
    for d in out.differences[:20]:
        console.print(Text(f"{_DIFF} {_describe(d)}", style="red"))
    if len(out.differences) > 20:
        console.print(f"... {len(out.differences) - 20} more")
    console.print(Text(verdict(out), style="bold green" if out.same else "bold red"))


def summarize(outcomes: Sequence[tuple[str, Outcome]]) -> list[dict[str, Any]]:
    """Per endpoint: requests, how many differ, and the most frequent differing patterns."""
    rows: dict[str, dict[str, Any]] = {}
    for endpoint, out in outcomes:
        row = rows.setdefault(endpoint, {"endpoint": endpoint, "requests": 0, "differing": 0,
                                         "fields": Counter()})
        row["requests"] += 1
        row["differing"] += 0 if out.same else 1
        row["fields"].update({d.pattern for d in out.differences})
    return [{**r, "fields": dict(r["fields"].most_common(5))} for r in rows.values()]


def print_summary(console: Console, outcomes: Sequence[tuple[str, Outcome]]) -> None:
    """The table per endpoint for ``--file``, then the differing requests, then the verdict."""
    grid = Table(title="compare: per endpoint")
    for column in ("endpoint", "requests", "differing", "top differing fields"):
        grid.add_column(column)
    for row in summarize(outcomes):
        fields = ", ".join(f"{p} ({n})" for p, n in row["fields"].items()) or "-"
        grid.add_row(row["endpoint"], str(row["requests"]),
                     Text(str(row["differing"]), style="red" if row["differing"] else "green"), fields)
    console.print(grid)
    differing = [out for _, out in outcomes if not out.same]
    for out in differing:
        where = f"{out.request.where}: " if out.request.line else ""
        console.print(Text(f"{where}{verdict(out)}", style="red"))
        for d in out.differences[:3]:
            console.print(f"    {_describe(d)}")
    total = len(outcomes)
    line = (f"SAME: {total} request(s), no real differences" if not differing else
            f"DIFFERENT: {len(differing)} of {total} request(s) differ")
    console.print(Text(line, style="bold red" if differing else "bold green"))


def outcome_json(endpoint: str, out: Outcome, names: Sequence[str], urls: Sequence[str]) -> dict:
    """One compared request as JSON for ``--json`` (left is the monolith, right the candidate)."""
    return {
        "request": out.request.to_dict(),
        "endpoint": endpoint,
        "same": out.same,
        "left": {"backend": names[0], "url": urls[0], "status": out.left.status},
        "right": {"backend": names[1], "url": urls[1], "status": out.right.status},
        "differences": [d.to_dict() for d in out.differences],
        "ignored": [d.pattern for d in out.ignored],
    }
