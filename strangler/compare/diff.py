"""The diff engine: what differs between two HTTP answers to the same request.

Pure, no I/O. ``diff(left, right, rule, noise)`` compares the status, the
headers the rule names and the body — JSON by path (lists the rule names as
sets compared as multisets), text line by line — and returns a list of
:class:`Difference`. ``noise_between`` gives the patterns that differ between
two answers of the same backend (Diffy-style noise). Work is bounded: big
bodies, deep nesting and huge lists end in a ``truncated`` difference, never
in a silent pass. docs/compare.md states every rule.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from strangler.plan.schema import DEFAULT_HEADERS

__all__ = [
    "DEFAULT_RULE", "KINDS", "MAX_BODY_BYTES", "MAX_DEPTH", "MAX_NODES", "Answer", "Difference", "Rule", "diff",
    "format_path", "matches", "noise_between", "parse_path", "pattern_of",
]

KINDS = ("status", "header", "changed", "type", "missing", "extra", "text", "truncated")
MAX_BODY_BYTES = 8 * 1024 * 1024  # bigger bodies are compared byte for byte, not parsed
MAX_NODES = 1_000_000  # JSON values visited per diff
MAX_DEPTH = 100  # nesting below this is not descended into
MAX_REPR = 1000  # characters of a value kept in a Difference
MAX_TEXT_LINES = 5000  # longer texts are compared line by line without alignment
BODY = "body"  # the path of a difference about the body as a whole

Token = str | int | None  # a key, an index, or None for [*]
_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_TOKEN = re.compile(r'\.?([A-Za-z_*][A-Za-z0-9_-]*)|\[(\*|\d+|"(?:[^"\\]|\\.)*")\]')


class Answer(NamedTuple):
    """One HTTP answer: status, headers (looked up case-insensitively) and the raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` whatever its case, or None if absent."""
        value = self.headers.get(name)
        if value is not None:
            return value
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    @classmethod
    def from_response(cls, response: Any) -> Answer:
        """Build from a ``requests.Response`` (anything with status_code, headers, content)."""
        return cls(response.status_code, dict(response.headers), response.content or b"")


class Rule(NamedTuple):
    """How to compare: ignored paths, compared headers, and list paths that are sets."""

    ignore: tuple[str, ...] = ()
    headers: tuple[str, ...] = DEFAULT_HEADERS
    sets: tuple[str, ...] = ()

    @classmethod
    def from_plan(cls, compare_rule: Any) -> Rule:
        """From the plan's ``CompareRule`` (``plan.compare_rule(endpoint)``)."""
        return cls(tuple(compare_rule.ignore), tuple(compare_rule.headers), tuple(compare_rule.sets))


class Difference(NamedTuple):
    """One difference: where (concrete ``path`` and its ``pattern``), what kind, both sides."""

    path: str
    pattern: str
    kind: str
    left: Any
    right: Any

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``--json`` and the comparator's store)."""
        return self._asdict()


DEFAULT_RULE = Rule()  # compare the default headers, ignore nothing, no sets


# --- paths -----------------------------------------------------------------


def parse_path(path: str) -> tuple[Token, ...]:
    """``users[3].name`` -> ``("users", 3, "name")``; ``[*]`` becomes None, a ``*`` key stays "*".

    Raises ValueError naming the path when it is not a JSON path.
    """
    tokens: list[Token] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None or (m.group(1) is not None and pos > 0 and path[pos] != "."):
            raise ValueError(f"{path!r} is not a JSON path (keys joined by '.', [N] or [*])")
        if m.group(1) is not None:
            tokens.append(m.group(1))
        elif m.group(2) == "*":
            tokens.append(None)
        elif m.group(2).startswith('"'):
            tokens.append(json.loads(m.group(2)))
        else:
            tokens.append(int(m.group(2)))
        pos = m.end()
    return tuple(tokens)


def format_path(tokens: Iterable[Token]) -> str:
    """The inverse of :func:`parse_path`: keys joined by dots, indexes in brackets."""
    out = []
    for token in tokens:
        if token is None:
            out.append("[*]")
        elif isinstance(token, int):
            out.append(f"[{token}]")
        elif _SIMPLE_KEY.fullmatch(token):
            out.append(f".{token}" if out else token)
        else:
            out.append(f"[{json.dumps(token)}]")
    return "".join(out)


def pattern_of(path: str) -> str:
    """``users[3].name`` -> ``users[*].name``: the key reports and noise are counted by."""
    try:
        return format_path(None if isinstance(t, int) else t for t in parse_path(path))
    except ValueError:
        return path


def _token_matches(want: Token, got: Token) -> bool:
    if want is None:
        return isinstance(got, int) or got is None
    if want == "*":
        return isinstance(got, str)
    return want == got


def _covers(pattern: tuple[Token, ...], path: tuple[Token, ...], exact: bool = False) -> bool:
    if len(pattern) > len(path) or (exact and len(pattern) != len(path)):
        return False
    return all(_token_matches(w, g) for w, g in zip(pattern, path, strict=False))


def matches(pattern: str, path: str) -> bool:
    """True when ``path`` is ``pattern`` or lies under it (``[*]`` any index, ``*`` any key)."""
    try:
        return _covers(parse_path(pattern), parse_path(path))
    except ValueError:
        return pattern == path


def _parse_all(patterns: Iterable[str]) -> list[tuple[Token, ...]]:
    parsed = []
    for p in patterns:
        try:
            parsed.append(parse_path(p))
        except ValueError:
            continue  # the plan check reports bad paths; a bad one ignores nothing here
    return parsed


# --- values ----------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _short(value: Any) -> Any:
    """The value itself when small, else a truncated JSON string saying how long it was."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) <= MAX_REPR:
        return value
    return f"{text[:MAX_REPR]}... ({len(text)} characters)"


class _Full(Exception):
    """Raised inside the walk when max_differences is reached."""


class _Walk:
    """One comparison's state: patterns, budget, and the differences found so far."""

    def __init__(self, rule: Rule, noise: Iterable[str], max_differences: int, max_nodes: int,
                 max_depth: int) -> None:
        self.skip = _parse_all((*rule.ignore, *noise))
        # whole-pattern spellings, for status and text bodies; header names ignore case
        self.unwanted = {*rule.ignore, *noise}
        self.unwanted_headers = {p.lower() for p in self.unwanted if p.lower().startswith("headers.")}
        self.sets = _parse_all(rule.sets)
        self.out: list[Difference] = []
        self.max_differences = max_differences
        self.nodes_left = max_nodes
        self.max_depth = max_depth

    def skipped(self, path: tuple[Token, ...]) -> bool:
        return any(_covers(p, path) for p in self.skip)

    def add(self, path: tuple[Token, ...] | str, kind: str, left: Any, right: Any,
            pattern: str | None = None) -> None:
        text = path if isinstance(path, str) else (format_path(path) or BODY)
        pattern = "truncated" if kind == "truncated" else pattern or pattern_of(text)
        if kind != "truncated" and pattern in self.unwanted:
            return
        if len(self.out) >= self.max_differences:
            self.out.append(Difference(text, "truncated", "truncated",
                                       f"more than {self.max_differences} differences", None))
            raise _Full
        self.out.append(Difference(text, pattern, kind, _short(left), _short(right)))

    def value(self, a: Any, b: Any, path: tuple[Token, ...]) -> None:
        if self.skipped(path):
            return
        self.nodes_left -= 1
        if self.nodes_left < 0:
            self.add(path, "truncated", "too many values to compare; the rest was not compared", None)
            raise _Full
        ta, tb = _type_name(a), _type_name(b)
        if ta != tb:
            self.add(path, "type", a, b)
        elif ta == "object":
            self.objects(a, b, path)
        elif ta == "array":
            self.arrays(a, b, path)
        elif a != b:
            self.add(path, "changed", a, b)

    def deeper(self, path: tuple[Token, ...], a: Any, b: Any) -> bool:
        if len(path) < self.max_depth:
            return True
        if a != b:
            self.add(path, "truncated", f"nested deeper than {self.max_depth} levels", None)
        return False

    def objects(self, a: dict, b: dict, path: tuple[Token, ...]) -> None:
        if not self.deeper(path, a, b):
            return
        for key, value in a.items():
            if key in b:
                self.value(value, b[key], (*path, key))
            elif not self.skipped((*path, key)):
                self.add((*path, key), "missing", value, None)
        for key, value in b.items():
            if key not in a and not self.skipped((*path, key)):
                self.add((*path, key), "extra", None, value)

    def arrays(self, a: list, b: list, path: tuple[Token, ...]) -> None:
        if not self.deeper(path, a, b):
            return
        if any(_covers(s, path, exact=True) for s in self.sets):
            self.multisets(a, b, path)
            return
        for i in range(min(len(a), len(b))):
            self.value(a[i], b[i], (*path, i))
        self.leftovers([(i, a[i]) for i in range(len(b), len(a))],
                       [(i, b[i]) for i in range(len(a), len(b))], path)

    def leftovers(self, only_a: list, only_b: list, path: tuple[Token, ...]) -> None:
        for i, value in only_a:
            if not self.skipped((*path, i)):
                self.add((*path, i), "missing", value, None)
        for i, value in only_b:
            if not self.skipped((*path, i)):
                self.add((*path, i), "extra", None, value)

    def multisets(self, a: list, b: list, path: tuple[Token, ...]) -> None:
        # Elements equal once ignored fields are left out match whatever their
        # order; the rest are paired by "id" (else in order) to name the field.
        unmatched: dict[str, list[int]] = {}
        for i, value in enumerate(b):
            unmatched.setdefault(self.canonical(value, (*path, i)), []).append(i)
        only_a = []
        for i, value in enumerate(a):
            bucket = unmatched.get(self.canonical(value, (*path, i)))
            if bucket:
                bucket.pop(0)
            else:
                only_a.append(i)
        only_b = sorted(j for bucket in unmatched.values() for j in bucket)
        b_by_id: dict[Any, int] = {}
        for j in only_b:
            b_by_id.setdefault(_id_of(b[j]), j)
        b_by_id.pop(None, None)
        pairs, paired_b = [], set()
        for i in only_a:
            j = b_by_id.pop(_id_of(a[i]), None) if _id_of(a[i]) is not None else None
            if j is not None:
                pairs.append((i, j))
                paired_b.add(j)
        # Elements without an id are paired in order; differing ids stay missing/extra.
        pairs += zip([i for i in only_a if _id_of(a[i]) is None],
                     [j for j in only_b if _id_of(b[j]) is None], strict=False)
        for i, j in pairs:
            self.value(a[i], b[j], (*path, i))
        paired_a, paired_b = {p[0] for p in pairs}, {p[1] for p in pairs}
        self.leftovers([(i, a[i]) for i in only_a if i not in paired_a],
                       [(j, b[j]) for j in only_b if j not in paired_b], path)

    def canonical(self, value: Any, path: tuple[Token, ...]) -> str:
        self.nodes_left -= 1
        return json.dumps(self.strip(value, path), sort_keys=True)

    def strip(self, value: Any, path: tuple[Token, ...]) -> Any:
        if not self.skip or len(path) >= self.max_depth:
            return value
        if isinstance(value, dict):
            return {k: self.strip(v, (*path, k)) for k, v in value.items()
                    if not self.skipped((*path, k))}
        if isinstance(value, list):
            return [self.strip(v, (*path, i)) for i, v in enumerate(value)
                    if not self.skipped((*path, i))]
        return value


def _id_of(value: Any) -> Any:
    ident = value.get("id") if isinstance(value, dict) else None
    return ident if isinstance(ident, (str, int)) and not isinstance(ident, bool) else None


# --- bodies ----------------------------------------------------------------

_NOT_JSON = object()


def _json_or_not(answer: Answer) -> Any:
    kind = (answer.header("Content-Type") or "").lower()
    head = answer.body.lstrip()[:1]
    if "json" not in kind and head not in (b"{", b"["):
        return _NOT_JSON
    try:
        return json.loads(answer.body)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _text_diff(walk: _Walk, a: bytes, b: bytes) -> None:
    la = a.decode("utf-8", "replace").splitlines()
    lb = b.decode("utf-8", "replace").splitlines()
    if max(len(la), len(lb)) > MAX_TEXT_LINES:
        # Alignment is quadratic at worst: long texts are compared line against line.
        hunks = [("replace", i, i + 1, i, i + 1) for i in range(min(len(la), len(lb)))
                 if la[i] != lb[i]]
        if len(la) != len(lb):
            n = min(len(la), len(lb))
            hunks.append(("replace", n, len(la), n, len(lb)))
    else:
        matcher = difflib.SequenceMatcher(None, la, lb, autojunk=False)
        hunks = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    for _tag, i1, i2, j1, j2 in hunks:
        walk.add(f"{BODY}:{i1 + 1}", "text", "\n".join(la[i1:i2]) or None,
                 "\n".join(lb[j1:j2]) or None, pattern=BODY)


def _body(walk: _Walk, left: Answer, right: Answer, max_bytes: int) -> None:
    if left.body == right.body:
        return
    if max(len(left.body), len(right.body)) > max_bytes:
        walk.add(BODY, "truncated",
                 f"body over {max_bytes} bytes ({len(left.body)} vs {len(right.body)} bytes) differs; "
                 "not compared field by field", None)
        return
    a, b = _json_or_not(left), _json_or_not(right)
    if a is _NOT_JSON and b is _NOT_JSON:
        if not walk.skipped((BODY,)):
            _text_diff(walk, left.body, right.body)
    elif a is _NOT_JSON or b is _NOT_JSON:
        if not walk.skipped((BODY,)):
            walk.add(BODY, "type", "JSON" if b is _NOT_JSON else "text",
                     "JSON" if a is _NOT_JSON else "text")
    else:
        walk.value(a, b, ())


def _location(value: str | None) -> str | None:
    # The two backends live at different addresses: compare where it points, not the host.
    if not value:
        return value
    parts = urlsplit(value)
    return urlunsplit(("", "", parts.path, parts.query, parts.fragment))


def _headers(walk: _Walk, left: Answer, right: Answer, names: Iterable[str]) -> None:
    for name in names:
        path = f"headers.{name}"
        if path.lower() in walk.unwanted_headers:
            continue
        a, b = left.header(name), right.header(name)
        if name.lower() == "location":
            a, b = _location(a), _location(b)
        if a != b:
            walk.add(path, "header", a, b)


def diff(left: Answer, right: Answer, rule: Rule = DEFAULT_RULE, noise: frozenset[str] = frozenset(), *,
         max_differences: int = 100, max_bytes: int = MAX_BODY_BYTES, max_nodes: int = MAX_NODES,
         max_depth: int = MAX_DEPTH) -> list[Difference]:
    """The differences between ``left`` (the monolith) and ``right`` (the candidate).

    Paths matching ``rule.ignore`` or a ``noise`` pattern are left out. At most
    ``max_differences`` are returned, then one ``truncated`` difference; bodies
    over ``max_bytes``, more than ``max_nodes`` values or nesting deeper than
    ``max_depth`` also end in a ``truncated`` difference. Empty list: same answer.
    """
    walk = _Walk(rule, noise, max_differences, max_nodes, max_depth)
    try:
        if left.status != right.status:
            walk.add("status", "status", left.status, right.status)
        _headers(walk, left, right, rule.headers)
        _body(walk, left, right, max_bytes)
    except _Full:
        pass
    return walk.out


def noise_between(first: Answer, second: Answer, rule: Rule = DEFAULT_RULE) -> frozenset[str]:
    """Patterns that differ between two answers of the SAME backend to the same request.

    They are noise (timestamps, tokens, generated ids) for that endpoint.
    ``truncated`` findings are not noise: a cap says nothing about a field.
    """
    found = diff(first, second, rule, max_differences=1000)
    return frozenset(d.pattern for d in found if d.kind != "truncated")
