"""The requests ``strangler compare --file`` sends: text, JSONL or HAR, parsed into :class:`Request`.

Pure, no I/O. The text format (docs/compare.md), one request per line::

    # comments and blank lines are skipped
    GET /api/users?online=1
    GET /api/users/1
        Authorization: Bearer abc123
    PUT /api/users/1
        Content-Type: application/json
        < {"nickname": "ann"}

An indented line belongs to the request above it: ``Name: value`` is a
header, ``< text`` is the body. A first line starting with ``{`` means
JSONL (one JSON object per line); a JSON document with ``log.entries``
is a HAR file. Anything malformed raises ValueError naming its line
(or HAR entry). A HAR's WebSocket entries are skipped and counted (there is
no answer to compare), and its conditional headers are dropped, so a
browser's cached copy never turns an answer into a bodiless 304.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from router.keys import METHODS

__all__ = ["SAFE_METHODS", "Request", "RequestsFile", "parse_request_line", "parse_requests",
           "read_requests"]

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Headers a recording carries that must not be replayed: each client sets its own.
_DROPPED = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}
# ... and, from a recording, what made the browser's request conditional on its cache
_CONDITIONAL = {"if-none-match", "if-modified-since"}


class Request(NamedTuple):
    """One request to send to both backends; ``line`` is where it came from (0: the command line)."""

    method: str
    target: str  # path and query, e.g. /api/users?online=1
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    line: int = 0
    source: str = "line"  # what ``line`` counts: "line" of a file, or "entry" of a HAR

    @property
    def where(self) -> str:
        """``"line 7"`` or ``"entry 9"``; empty for the command line's request."""
        return f"{self.source} {self.line}" if self.line else ""

    @property
    def safe(self) -> bool:
        """True for methods that do not write (GET, HEAD, OPTIONS)."""
        return self.method in SAFE_METHODS

    @property
    def path(self) -> str:
        """The path without the query."""
        return urlsplit(self.target).path

    def __str__(self) -> str:
        return f"{self.method} {self.target}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the body as text)."""
        body = None if self.body is None else self.body.decode("utf-8", "replace")
        return {"method": self.method, "target": self.target, "headers": dict(self.headers),
                "body": body, "line": self.line, "source": self.source}


class RequestsFile(NamedTuple):
    """A parsed requests file: its requests, its format, and the HAR entries skipped as WebSockets."""

    requests: list[Request]
    kind: str  # "text", "jsonl" or "har"
    websockets: tuple[int, ...] = ()


def _target(raw: str, where: str) -> str:
    # A full URL (a HAR, a copied address) keeps only its path and query: the
    # backends' addresses come from the registry or the command line.
    try:
        parts = urlsplit(raw)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 address
        raise ValueError(f"{where}: {raw[:200]!r} is not a URL ({exc})") from None
    if parts.scheme in ("http", "https"):
        return urlunsplit(("", "", parts.path or "/", parts.query, ""))
    if not raw.startswith("/") or parts.scheme or parts.netloc:
        raise ValueError(f"{where}: {raw!r} is not a path starting with / or an http(s) URL")
    return raw


def _method(raw: str, where: str) -> str:
    method = raw.upper()
    if method not in METHODS:
        raise ValueError(f"{where}: unknown method {raw!r}; use one of {', '.join(METHODS)}")
    return method


def parse_request_line(text: str, line: int = 0) -> Request:
    """``"GET /api/users/1"`` -> Request; ValueError naming ``line`` when malformed."""
    where = f"line {line}" if line else "request"
    words = text.split()
    if len(words) != 2:
        raise ValueError(f'{where}: {text.strip()!r} is not "METHOD /path?query"')
    return Request(_method(words[0], where), _target(words[1], where), line=line)


def parse_header(text: str, where: str = "header") -> tuple[str, str]:
    """``"Name: value"`` -> ``("Name", "value")``; ValueError when there is no name."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or " " in name.strip():
        raise ValueError(f"{where}: {text.strip()!r} is not a header 'Name: value'")
    return name.strip(), value.strip()


def _parse_text(lines: list[str]) -> list[Request]:
    found: list[Request] = []
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if raw[:1] not in (" ", "\t"):
            found.append(parse_request_line(text, number))
            continue
        if not found:
            raise ValueError(f"line {number}: an indented line needs a request line above it")
        last = found[-1]
        if text.startswith("<"):
            if last.body is not None:
                raise ValueError(f"line {number}: {last} already has a body")
            found[-1] = last._replace(body=text[1:].strip().encode())
        else:
            found[-1] = last._replace(headers=(*last.headers, parse_header(text, f"line {number}")))
    return found


def _from_object(data: Any, where: str, line: int) -> Request:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a JSON object with method and path")
    method = data.get("method", "GET")
    target = data.get("path", data.get("url"))
    if not isinstance(method, str) or not isinstance(target, str):
        raise ValueError(f"{where}: needs \"path\" (or \"url\") and an optional \"method\", as strings")
    headers = data.get("headers", {})
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise ValueError(f"{where}: \"headers\" must be an object of strings")
    body = data.get("body")
    if body is not None and not isinstance(body, str):
        body = json.dumps(body)  # a JSON value is sent as JSON text
    return Request(_method(method, where), _target(target, where), tuple(headers.items()),
                   None if body is None else body.encode(), line)


def _parse_jsonl(lines: list[str]) -> list[Request]:
    found = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"line {number}: not JSON: {exc}") from None
        except RecursionError:
            raise ValueError(f"line {number}: JSON nested too deeply") from None
        found.append(_from_object(data, f"line {number}", number))
    return found


def _har_headers(items: Any, where: str) -> Iterable[tuple[str, str]]:
    if not isinstance(items, list):
        raise ValueError(f"{where}: request.headers must be a list")
    for item in items:
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: a header must be an object with name and value")
        name, value = item.get("name"), item.get("value")
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"{where}: a header needs a name and a value")
        if not name.startswith(":") and name.lower() not in _DROPPED | _CONDITIONAL:
            yield name, value


def _is_websocket(entry: Mapping, request: Mapping) -> bool:
    # Chromium and Playwright mark it as a resource type, with the 101 of the upgrade
    status = (entry.get("response") or {}).get("status") if isinstance(entry.get("response"), Mapping) else None
    try:
        scheme = urlsplit(request["url"]).scheme
    except ValueError:  # not a URL at all: _target says so, naming the entry
        scheme = ""
    return entry.get("_resourceType") == "websocket" or status == 101 or scheme in ("ws", "wss")


def _parse_har(doc: Mapping) -> RequestsFile:
    log = doc.get("log")
    entries = log.get("entries") if isinstance(log, Mapping) else None
    if not isinstance(entries, list):
        raise ValueError("HAR: log.entries is missing or not a list")
    found, websockets = [], []
    for number, entry in enumerate(entries, 1):
        where = f"HAR entry {number}"
        request = entry.get("request") if isinstance(entry, Mapping) else None
        if not isinstance(request, Mapping) or not isinstance(request.get("url"), str):
            raise ValueError(f"{where}: needs request.method and request.url")
        if _is_websocket(entry, request):
            websockets.append(number)
            continue
        post = request.get("postData") or {}
        if not isinstance(post, Mapping):
            raise ValueError(f"{where}: request.postData must be an object")
        text = post.get("text")
        found.append(Request(_method(str(request.get("method", "GET")), where),
                             _target(request["url"], where),
                             tuple(_har_headers(request.get("headers", []), where)),
                             None if text is None else str(text).encode(), number, "entry"))
    return RequestsFile(found, "har", tuple(websockets))


def read_requests(text: str) -> RequestsFile:
    """A requests file (text, JSONL or HAR; see the module docstring), parsed.

    Raises ValueError naming the line (or HAR entry) of the first malformed one.
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None  # several objects: JSONL
        except RecursionError:
            raise ValueError("JSON nested too deeply to be a requests file or a HAR") from None
        if isinstance(doc, Mapping) and "log" in doc:
            return _parse_har(doc)
        return RequestsFile(_parse_jsonl(text.splitlines()), "jsonl")
    return RequestsFile(_parse_text(text.splitlines()), "text")


def parse_requests(text: str) -> list[Request]:
    """Every request in a requests file (see :func:`read_requests`, which also says what it skipped)."""
    return read_requests(text).requests
