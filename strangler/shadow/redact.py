"""PURE: credentials taken out of what the comparator stores and ``strangler diffs`` prints.

A shadowed write endpoint carries passwords in its body and a token in its
answer; a read carries ``Authorization`` and maybe a token in the query.
What is kept for people to read (example requests and answers, the values
of differing fields) has them replaced by ``REDACTED``:

- JSON: the value of every key whose name says secret (password, token,
  secret, authorization, cookie, api key, session, credential), at any depth;
- text that is not JSON (a body cut short, a form): ``"name": "value"`` and
  ``name=value`` pairs with such a name;
- a query string: the same names;
- headers: Authorization, Cookie, Set-Cookie, Proxy-Authorization and the
  mirror mark.

Redacting twice changes nothing, so ``strangler diffs`` redacts again what
it reads (a file written before redaction existed is covered too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

REDACTED = "[redacted]"
# A key names a secret when one of these occurs in it, whatever the case or separators.
_SECRET_WORDS = ("password", "passwd", "token", "secret", "authorization", "cookie", "apikey",
                 "session", "credential", "jwt")
SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization",
                            "x-strangler-mirror"})
_JSON_PAIR = re.compile(r'("(?P<key>[^"\\]{1,100})"\s*:\s*)"(?:[^"\\]|\\.)*("?)')
_FORM_PAIR = re.compile(r"(?P<lead>(?:^|[&;\s?])(?P<key>[A-Za-z0-9_.\-\[\]]{1,100})=)[^&;\s]*")


def is_secret_name(name: object) -> bool:
    """True when a field, parameter or header called ``name`` holds a credential."""
    if not isinstance(name, str):
        return False
    squashed = re.sub(r"[^a-z]", "", name.lower())
    return name.lower() in SECRET_HEADERS or any(word in squashed for word in _SECRET_WORDS)


def redact_json(value: Any) -> Any:
    """``value`` with every secret-named key's value replaced, at any depth."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_name(k) else redact_json(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(item) for item in value]
    return value


def redact_text(text: str) -> str:
    """A body as text, credentials replaced: re-serialised when it is JSON, pattern-matched if not."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, (dict, list)):
        return json.dumps(redact_json(parsed), ensure_ascii=False)
    text = _JSON_PAIR.sub(
        lambda m: f'{m.group(1)}"{REDACTED}"' if is_secret_name(m.group("key")) else m.group(0), text)
    return _FORM_PAIR.sub(
        lambda m: f"{m.group('lead')}{REDACTED}" if is_secret_name(m.group("key")) else m.group(0), text)


def redact_target(target: str) -> str:
    """A request's path and query, secret-named query parameters replaced."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(is_secret_name(k) for k, _ in pairs):
        return target
    return path + "?" + urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs])


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with credential-carrying values replaced."""
    return {k: (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def redact_difference(difference: Mapping[str, Any]) -> dict[str, Any]:
    """One stored difference (``path``, ``left``, ``right``, ...) with secret values replaced."""
    last = re.split(r"[.\[\]]", difference.get("path", "").rstrip("]"))[-1]
    out = dict(difference)
    for side in ("left", "right"):
        if side in out:
            out[side] = REDACTED if is_secret_name(last) else redact_json(out[side])
    return out


def redact_example(example: Mapping[str, Any]) -> dict[str, Any]:
    """A stored example (request, both answers, differences) with every credential replaced."""
    out = dict(example)
    request = dict(out.get("request") or {})
    if "target" in request:
        request["target"] = redact_target(request["target"])
    if isinstance(request.get("body"), str):
        request["body"] = redact_text(request["body"])
    out["request"] = request
    for side in ("monolith", "candidate"):
        if isinstance(out.get(side), Mapping):
            shown = dict(out[side])
            if isinstance(shown.get("body"), str):
                shown["body"] = redact_text(shown["body"])
            if isinstance(shown.get("headers"), Mapping):
                shown["headers"] = redact_headers(shown["headers"])
            out[side] = shown
    out["differences"] = [redact_difference(d) for d in out.get("differences") or []]
    return out
