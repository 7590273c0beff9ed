"""Hostile input for tests: messages built to make rendering slow, and Hypothesis strategies.

Importable as ``hostile`` from every test (``tests/conftest.py`` puts this
directory on ``sys.path``).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import jwt
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from monolith.models import SOURCE_MAX

# pieces that made markdown or bleach backtrack, each repeated to the cap
HOSTILE_PIECES = ["[", "![", "<b>", "<i><b>", "*a", "_a", "[a](", "`a", "(", "a-", "[*", "&"]


def hostile_source(piece: str, size: int = SOURCE_MAX) -> str:
    """*piece* repeated to exactly *size* characters."""
    return (piece * (size // len(piece) + 1))[:size]


# ------------------------------------------------------------------ Hypothesis

# bounded: every property test of the suite together takes well under a minute
PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

# what every property test threw, and how many answers were 5xx (reported at the end)
TALLY: Counter = Counter()

# lone surrogates, NUL and odd digits come up on purpose, not by luck: text
# is a few pieces, each plain text, a special character or a lone surrogate
SPECIAL = st.sampled_from(["\x00", "²", "٣", "9", "[", "{", "<", "\\", '"', "\n", "é", "\U0001f600"])
PIECE = st.text(max_size=8) | SPECIAL | st.characters(categories=["Cs"])
TEXT = st.lists(PIECE, max_size=5).map("".join) | st.sampled_from(
    ["", " ", "9" * 30, "²", "-1", "0", "1", "2147483648", "\ud800", "a\x00b", "x" * 5000])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(["nickname", "password", "source", "id"]) | TEXT
DEEP = st.sampled_from(["[" * 200_000, '{"a":' * 100_000, "[" * 990 + "]" * 990,
                        '{"source":' + "[" * 5000 + "]" * 5000 + "}"])


@st.composite
def bodies(draw: Any) -> bytes | None:
    """A request body: none, the API's fields as text or any JSON, any JSON, deep JSON or raw bytes."""
    kind = draw(st.sampled_from(["none", "text", "text", "fields", "json", "deep", "bytes"]))
    if kind == "none":
        return None
    if kind == "text":  # the API's own fields, as strings: past type checks, into storage
        names = st.sampled_from(["nickname", "password", "source"])
        return json.dumps(draw(st.dictionaries(names, TEXT, min_size=1))).encode()
    if kind == "fields":
        return json.dumps(draw(st.dictionaries(FIELDS, JSON, max_size=4))).encode()
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    if kind == "deep":
        return draw(DEEP).encode()
    return draw(st.binary(max_size=200))


def claims(secret: str) -> st.SearchStrategy[str]:
    """Tokens signed with *secret* whose claims are arbitrary: an id, a jti, times, anything."""
    now = time.time()
    value = st.one_of(JSON, st.just(now), st.just(now + 3600), st.sampled_from(["1", "2", "9" * 30]))
    payload = st.fixed_dictionaries({}, optional={name: value for name in
                                                  ("sub", "nickname", "jti", "iat", "exp")})
    return payload.map(lambda c: jwt.encode(c, secret, algorithm="HS256"))


def authorizations(secret: str, valid: Callable[[], str] | None = None
                   ) -> st.SearchStrategy[str | None]:
    """An ``Authorization`` header (latin-1, as HTTP carries it), or none.

    *valid*, if given, returns a good token: then some requests get past auth.
    """
    latin = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=60)
    good = [st.builds(lambda: "Bearer " + valid())] * 6 if valid else []
    return st.one_of(
        *good,
        st.none(),
        latin,
        latin.map(lambda t: "Bearer " + t),
        claims(secret).map(lambda t: "Bearer " + t),
        latin.map(lambda t: "Basic " + t),
        st.tuples(TEXT, TEXT).map(lambda pair: "Basic " + _basic(*pair)),
    )


def _basic(user: str, password: str) -> str:
    raw = f"{user}:{password}".encode("utf-8", "surrogatepass")
    return base64.b64encode(raw).decode()


def _quoted(text: str) -> str:
    # a lone surrogate goes out as the bytes a careless client would send
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


_VARIABLE = re.compile(r"<(?:[^:<>]+:)?[^<>]+>")


def paths(app: Any) -> st.SearchStrategy[tuple[str, str]]:
    """(method, path) of every rule of *app*, each variable filled with a hostile id or text."""
    rules = [(method, rule.rule) for rule in app.url_map.iter_rules()
             for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    ident = st.sampled_from(["1", "2"]) | st.integers().map(str) | TEXT
    # mostly the app's own rules, sometimes a path no rule matches
    rule = st.one_of(*[st.sampled_from(rules)] * 4, st.tuples(
        st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
        TEXT.map(lambda t: "/api/" + _quoted(t))))

    def fill(chosen: tuple[str, str]) -> st.SearchStrategy[tuple[str, str]]:
        method, template = chosen
        parts = _VARIABLE.split(template)
        return st.lists(ident, min_size=len(parts) - 1, max_size=len(parts) - 1).map(
            lambda ids: (method, parts[0] + "".join(
                _quoted(i) + rest
                for i, rest in zip(ids, parts[1:], strict=True))))

    return rule.flatmap(fill)


QUERIES = st.dictionaries(st.sampled_from(["updated_since", "user_id", "online"]) | TEXT,
                          TEXT, max_size=3)


def throw(client: Any, method: str, path: str, body: bytes | None, authorization: str | None,
          query: dict[str, str], tally_as: str) -> Any:
    """Send one hostile request through a Flask test client; check the answer; return it.

    Never a 5xx; every error (4xx) is the API's JSON shape ``{"error": "<text>"}``.
    """
    headers = {"Accept": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    safe_query = {k.encode("utf-8", "surrogatepass").decode("latin-1"):
                  v.encode("utf-8", "surrogatepass").decode("latin-1") for k, v in query.items()}
    response = client.open(path, method=method, data=body, headers=headers, query_string=safe_query,
                           content_type="application/json")
    TALLY[tally_as] += 1
    if response.status_code >= 500:
        TALLY[f"{tally_as} 5xx"] += 1
    assert response.status_code < 500, (method, path, body and body[:200], response.data[:300])
    if response.status_code >= 400:
        error = response.get_json(silent=True)
        assert isinstance(error, dict) and isinstance(error.get("error"), str) and error["error"], (
            method, path, response.status_code, response.data[:300])
    return response


def report(config: Any) -> None:
    """Print the tally of inputs thrown and 5xx answers seen, past pytest's output capture."""
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for name in sorted(k for k in TALLY if not k.endswith(" 5xx")):
            print(f"\nhostile input: {name}: {TALLY[name]} thrown, "
                  f"{TALLY[name + ' 5xx']} answered 5xx", end="")
        print()
