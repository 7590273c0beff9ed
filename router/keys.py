"""The etcd key layout: endpoints, routes and the Traefik keys derived from them.

Pure functions only (no I/O), so every key path and value is unit-tested.
The layout is documented in docs/etcd-keys.md.

Decisions:
- HEAD follows GET: Flask answers HEAD for every GET route, so the router
  of ``GET /x`` also matches ``HEAD /x``; a flipped GET takes its HEAD along.
  An endpoint declared explicitly as ``HEAD /x`` gets its own router, one
  priority step above the GET one so it wins.
- Flask converters are dropped (``<int:id>`` is ``<id>``): the monolith
  already rejects a bad value with 404, whichever backend serves it.
  ``<path:x>`` is kept because it also matches slashes.
- A *prefix* endpoint (``PREFIX /socket.io/``) is not a Flask route but a
  path prefix (Socket.IO, static files): any method, every path below it.
  Its router sits between the catch-all and every exact endpoint, so an
  exact endpoint under the prefix still gets its own route.
- Service-to-service endpoints (paths under ``/internal/``) are never routed
  on the public entrypoint: with an internal entrypoint, every router listens
  on both, except theirs, which listen on the internal one only. From the
  public entrypoint an ``/internal/...`` path falls to the catch-all, and the
  monolith has no such route (404).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

ROOT = "traefik"
ROUTES_PREFIX = "strangler/routes/"
HISTORY_PREFIX = "strangler/history/"
META_PREFIX = "strangler/meta/"
# Every table change rewrites this key (value: the last history id), so its
# mod_revision is the compare-and-swap guard for the whole table.
LAST_CHANGE_KEY = META_PREFIX + "last-change"
# JSON {monolith, entrypoint, healthchecks}: the options traefik_keys() needs,
# stored so every writer derives the same keys.
OPTIONS_KEY = META_PREFIX + "options"

CATCHALL = "catchall"
RETRY = "retry"
RETRY_ATTEMPTS = 5
# Traefik retries by itself only when nothing reached the backend (refused
# connection). An instance killed while it holds a request makes Traefik answer
# 502 instead; retrying that status sends the idempotent request to another
# instance. Never 503 or 504: a backend may say those itself, and a service's
# own bounded retries already cover "no instance right now".
RETRY_STATUS = ("502",)
# Until the active health check (every 2 s) notices a dead instance, a retry
# may draw it again: with 3 immediate attempts some requests drew it on all 3.
# 5 attempts, spaced 100-200 ms apart, outlast that window far more often.
# (Traefik's passive health check is no answer: it also counts a backend's
# own 5xx, so one clean 503 took a healthy instance out of rotation.)
RETRY_INTERVAL = "100ms"
MONOLITH = "monolith"
# A blue/green's second set of instances registers under "<backend>-green" (its own Traefik
# service); backend names are [a-z0-9_-], router services end in -canary / -shadow.
GREEN_SUFFIX = "-green"
# Prefixes whose clients hold a session across several requests that must all
# reach one instance (Socket.IO's long-polling): their backends' load
# balancers get a sticky cookie, and a canary's weighted service the canary's.
SESSION_PREFIXES = ("/socket.io/",)
STICKY_COOKIE = "strangler_sticky_"  # + the Traefik service's name
# Paths only services call (through the internal entrypoint), never users.
INTERNAL_PREFIX = "/internal/"
# Traefik marks each mirrored copy with this header (a headers middleware on the
# shadowed routers), valued the secret stored in the options; the comparator
# takes copies carrying it only. Traefik mirrors bodies up to MIRROR_MAX_BODY.
MIRROR_MARK = "mirror-mark"
MIRROR_HEADER = "X-Strangler-Mirror"
MIRROR_MAX_BODY = 1 << 20
# The entrypoint services call each other through (router.traefik.static_config
# binds it to loopback / the internal network); "web" is the public one.
INTERNAL_ENTRYPOINT = "internal"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
PREFIX = "PREFIX"  # the "method" of a prefix endpoint: every method, every path below
# Retrying is safe only where repeating the request cannot do harm twice.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# Methods that change nothing: replayed to two backends without asking (shadowing).
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

PARAM = re.compile(r"^<(?:(?P<conv>[A-Za-z_]\w*)(?:\([^)]*\))?:)?(?P<name>[A-Za-z_]\w*)>$")
_STATIC = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%-]+$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class Endpoint(NamedTuple):
    """An endpoint: an HTTP method plus a path template as Flask declares it,
    or ``PREFIX`` plus a path prefix ending in ``/``."""

    method: str
    path: str

    @property
    def is_prefix(self) -> bool:
        """True for a ``PREFIX`` endpoint, which matches every method under its path."""
        return self.method == PREFIX

    @property
    def is_internal(self) -> bool:
        """True for a service-to-service endpoint (under ``/internal/``): not for the public."""
        return self.path.startswith(INTERNAL_PREFIX)

    @property
    def id(self) -> str:
        """A stable, key-safe slug: ``GET /api/users/<id>`` -> ``get-api-users-id``."""
        return _slug(self.method, self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


# Cached: a flip re-derives every endpoint's keys, and a 2000-endpoint table
# spent ~160 ms per flip recomputing these slugs with regexes.
@functools.lru_cache(maxsize=65536)
def _slug(method: str, path: str) -> str:
    words = [method.lower()]
    for segment in path.strip("/").split("/"):
        param = PARAM.match(segment)
        text = param.group("name") if param else segment
        words.append(re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x")
    return "-".join(words) if path != "/" else f"{words[0]}-root"


def parse_endpoint(spec: str, *, strict: bool = False) -> Endpoint:
    """Parse ``"GET /api/users/<int:id>"`` (or ``"PREFIX /socket.io/"``) into an Endpoint.

    Converters are dropped (``<path:x>`` kept). Forgiving by default (any
    case, extra spaces), as a person types it; ``strict`` wants the spelling
    a file must use: upper-case method and exactly one space. Raises
    ValueError naming the bad value when the spec is malformed.
    """
    if not isinstance(spec, str):
        raise ValueError(f"endpoint {spec!r} must be a string like 'GET /api/users/<id>'")
    word, _, path = spec.strip().partition(" ")
    method, path = word.upper(), path.strip()
    if not path:
        raise ValueError(f"endpoint {spec!r} must be METHOD /path, e.g. 'GET /api/users/<id>'")
    if method not in METHODS + (PREFIX,):
        raise ValueError(
            f"endpoint {spec!r}: unknown method {word!r}; use one of {', '.join(METHODS)} or {PREFIX}"
        )
    if strict and (spec != f"{word} {path}" or word != method):
        raise ValueError(f"endpoint {spec!r}: write it as 'METHOD /path', upper case, one space")
    if not path.startswith("/") or "//" in path:
        raise ValueError(f"endpoint {spec!r}: path {path!r} must start with / and have no //")
    raw = path.split("/")[1:]
    segments = []
    for i, segment in enumerate(raw):
        if segment == "" and i == len(raw) - 1:
            segments.append("")  # trailing slash, as in Flask's "/api/users/"
            continue
        param = PARAM.match(segment)
        if param and method == PREFIX:
            raise ValueError(f"endpoint {spec!r}: a prefix has no placeholders ({segment!r})")
        if param:
            keep_path = param.group("conv") == "path"
            segments.append(f"<path:{param['name']}>" if keep_path else f"<{param['name']}>")
        elif _STATIC.match(segment):
            segments.append(segment)
        else:
            raise ValueError(f"endpoint {spec!r}: bad path segment {segment!r}")
    if method == PREFIX and not path.endswith("/"):
        raise ValueError(f"endpoint {spec!r}: a prefix path ends with /, e.g. 'PREFIX /socket.io/'")
    return Endpoint(method, "/" + "/".join(segments))


def _regex_segment(segment: str) -> str:
    param = PARAM.match(segment)
    if param:
        return ".+" if param.group("conv") == "path" else "[^/]+"
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", segment)


def rule(endpoint: Endpoint) -> str:
    """The Traefik v3 rule matching exactly this endpoint's method and path
    (a prefix endpoint: every method, every path starting with its prefix)."""
    if endpoint.is_prefix:
        return f"PathPrefix(`{endpoint.path}`)"
    if endpoint.method == "GET":
        method = "(Method(`GET`) || Method(`HEAD`))"
    else:
        method = f"Method(`{endpoint.method}`)"
    segments = endpoint.path.split("/")
    if not any(PARAM.match(s) for s in segments):
        return f"{method} && Path(`{endpoint.path}`)"
    regex = "/".join(_regex_segment(s) for s in segments)
    return f"{method} && PathRegexp(`^{regex}$`)"


def priority(endpoint: Endpoint) -> int:
    """Router priority: more static segments first, then more segments, then longer.

    Always well above the catch-all's priority 1. A prefix endpoint ranks
    below every exact endpoint (whose lowest, ``GET /<path:p>``, is 18028)
    and above the catch-all: longer prefixes first, from 2 up to 9999.
    """
    if endpoint.is_prefix:
        return 1 + min(len(endpoint.path), 9998)
    segments = endpoint.path.strip("/").split("/")
    params = [s for s in segments if PARAM.match(s)]
    static = len(segments) - len(params)
    wildcard = sum(1 for s in params if s.startswith("<path:"))
    score = ((static * 100 + len(segments)) * 10 - wildcard) * 1000 + min(len(endpoint.path), 999)
    # Two steps per score so an explicit HEAD endpoint outranks the GET router
    # (which also matches HEAD) of the same path.
    return 10 + score * 2 + (1 if endpoint.method == "HEAD" else 0)


_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_COOKIE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# A value goes into a Traefik rule between backticks: no backtick, no control characters.
_MATCH_VALUE = re.compile(r"^[A-Za-z0-9 _.:/+=~!*@%-]{1,128}$")
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_.~!*%+-]{1,128}$")
# A/B routers rank one step above their endpoint's own router (see ab_priority).
AB_SUFFIX = "_ab"  # ids are [a-z0-9-], so no endpoint's router can be called this
STICKY_PREFIX = "strangler_"


class Match(NamedTuple):
    """An A/B condition: requests carrying header ``name: value`` (``cookie``: a cookie
    ``name=value``) go to ``backend``, every other request follows the route."""

    backend: str
    name: str
    value: str
    cookie: bool = False

    def __str__(self) -> str:
        return f"cookie {self.name}={self.value}" if self.cookie else f"{self.name}: {self.value}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored inside the route)."""
        return {"backend": self.backend, "name": self.name, "value": self.value, "cookie": self.cookie}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Match:
        """Inverse of to_dict."""
        return cls(data["backend"], data["name"], data["value"], bool(data.get("cookie")))


def parse_header_match(backend: str, spec: str) -> Match:
    """PURE: ``--header 'X-Canary: 1'`` as a Match; ValueError saying what to write otherwise."""
    name, sep, value = spec.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _HEADER_NAME.match(name) or not _MATCH_VALUE.match(value):
        raise ValueError(f"--header {spec!r}: write it as 'Name: value' (a header name, then a value "
                         "of letters, digits and ' _.:/+=~!*@%-', no backticks)")
    return Match(backend, name, value)


def parse_cookie_match(backend: str, spec: str) -> Match:
    """PURE: ``--cookie name=value`` as a Match; ValueError saying what to write otherwise."""
    name, sep, value = spec.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not _COOKIE_NAME.match(name) or not _COOKIE_VALUE.match(value):
        raise ValueError(f"--cookie {spec!r}: write it as name=value (letters, digits, '_.-'; "
                         "the value also '~!*%+')")
    return Match(backend, name, value, cookie=True)


def match_rule(endpoint: Endpoint, match: Match) -> str:
    """PURE: the rule of an A/B router: the endpoint's rule and the header (or cookie) condition.

    A cookie is matched inside the ``Cookie`` header, as a whole ``name=value`` pair.
    """
    if match.cookie:
        pair = re.escape(f"{match.name}={match.value}")
        condition = f"HeaderRegexp(`Cookie`, `(^|;\\s*){pair}(;|$)`)"
    else:
        condition = f"Header(`{match.name}`, `{match.value}`)"
    return f"({rule(endpoint)}) && {condition}"


def ab_priority(endpoint: Endpoint) -> int:
    """One above the endpoint's own router: an A/B router wins over it for matching requests,
    and stays below every more specific endpoint (their priorities are at least 2 apart)."""
    return priority(endpoint) + 1


def ab_router(router: str) -> str:
    """PURE: the name of the A/B router beside router *router*."""
    return router + AB_SUFFIX


def sticky_cookie(router: str) -> str:
    """PURE: the name of the sticky cookie of the canary on router *router*."""
    return STICKY_PREFIX + router.replace("-", "_")


@dataclass(frozen=True)
class Route:
    """The desired state of one endpoint: which backend answers, and how.

    - ``backend``: "monolith" or a service name; it answers the requests.
    - ``weights``: canary split, e.g. {"users": 10, "monolith": 90}.
    - ``mirror``: shadow, a copy of each request goes to this backend too.
    - ``candidate``: with a mirror, the service the comparator holds up
      against the monolith. Kept in the route so that it changes in the same
      transaction as the mirror (Traefik never sees it).
    - ``mirror_percent``: with a mirror, the share of requests Traefik copies
      (1-100); the others cost the primary path nothing.
    - ``match``: an A/B route: requests matching it go to its backend instead.
    - ``sticky``: a canary sets a cookie so that one user stays on one side.
    """

    endpoint: Endpoint
    backend: str = MONOLITH
    weights: dict[str, int] | None = None
    mirror: str | None = None
    candidate: str | None = None
    match: Match | None = None
    sticky: bool = False
    mirror_percent: int = 100

    def __post_init__(self) -> None:
        ab = self.match.backend if self.match else "x"
        for name in [self.backend, self.mirror or "x", self.candidate or "x", ab, *(self.weights or {})]:
            if not _NAME.match(name):
                raise ValueError(f"{self.endpoint}: backend name {name!r} must be [a-z0-9_-]")
        if self.weights is not None:
            if not self.weights or any(w < 0 for w in self.weights.values()):
                raise ValueError(f"{self.endpoint}: weights {self.weights} must be >= 0")
            if sum(self.weights.values()) <= 0:
                raise ValueError(f"{self.endpoint}: weights {self.weights} add up to 0")
        if not self.mirror:  # the share belongs to a mirror: without one, a route is as it always was
            object.__setattr__(self, "mirror_percent", 100)
        if isinstance(self.mirror_percent, bool) or not isinstance(self.mirror_percent, int) \
                or not 1 <= self.mirror_percent <= 100:
            raise ValueError(f"{self.endpoint}: mirror_percent {self.mirror_percent!r} must be a whole "
                             "number from 1 to 100")

    @property
    def state(self) -> str:
        """One of "monolith", "flipped", "canary", "shadow"."""
        if self.mirror:
            return "shadow"
        if self.weights:
            return "canary"
        return "monolith" if self.backend == MONOLITH else "flipped"

    @property
    def backends(self) -> set[str]:
        """Every backend this route sends traffic to."""
        names = {self.backend, *(self.weights or {})} | ({self.match.backend} if self.match else set())
        return names | ({self.mirror} if self.mirror else set())

    def to_json(self) -> str:
        """Serialise the desired state (stored under ``state_key(endpoint)``)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        """The route as a plain dict (endpoint as its "METHOD /path" spec).

        ``match``, ``sticky`` and a ``mirror_percent`` under 100 appear only
        when set, so routes without them read (and are stored) exactly as
        before they existed."""
        data: dict[str, Any] = {
            "endpoint": str(self.endpoint),
            "backend": self.backend,
            "weights": self.weights,
            "mirror": self.mirror,
            "candidate": self.candidate,
        }
        if self.match:
            data["match"] = self.match.to_dict()
        if self.sticky:
            data["sticky"] = True
        if self.mirror_percent != 100:
            data["mirror_percent"] = self.mirror_percent
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Route:
        """Inverse of to_dict."""
        return cls(
            endpoint=parse_endpoint(data["endpoint"]),
            backend=data.get("backend") or MONOLITH,
            weights=dict(data["weights"]) if data.get("weights") else None,
            mirror=data.get("mirror"),
            candidate=data.get("candidate"),
            match=Match.from_dict(data["match"]) if data.get("match") else None,
            sticky=bool(data.get("sticky")),
            mirror_percent=data.get("mirror_percent", 100),
        )

    @classmethod
    def from_json(cls, text: str) -> Route:
        """Inverse of to_json."""
        return cls.from_dict(json.loads(text))


def state_key(endpoint: Endpoint) -> str:
    """Where the desired state of `endpoint` lives in etcd."""
    return ROUTES_PREFIX + endpoint.id


def history_key(change_id: int) -> str:
    """Where history record `change_id` lives (zero-padded so keys sort by id)."""
    return f"{HISTORY_PREFIX}{change_id:08d}"


def service_key(backend: str) -> str:
    """Prefix of a backend's Traefik load balancer (its servers live below it)."""
    return f"{ROOT}/http/services/{backend}/loadbalancer/"


def is_server_key(key: str) -> bool:
    """True for instance registrations, which the route table never touches."""
    return "/loadbalancer/servers/" in key.lower()


def _router(name: str, rule_: str, prio: int, service: str, entrypoints: tuple[str, ...],
            middlewares: tuple[str, ...]):
    base = f"{ROOT}/http/routers/{name}/"
    keys = {
        base + "rule": rule_,
        base + "priority": str(prio),
        base + "service": service,
    }
    keys |= {f"{base}entryPoints/{i}": entrypoint for i, entrypoint in enumerate(entrypoints)}
    keys |= {f"{base}middlewares/{i}": middleware for i, middleware in enumerate(middlewares)}
    return keys


@functools.lru_cache(maxsize=65536)
def _endpoint_router(endpoint: Endpoint, service: str, entrypoints: tuple[str, ...],
                     marked: bool = False) -> dict[str, str]:
    """One endpoint's router keys (cached: the same for every flip that leaves it alone).

    ``marked``: its copies are mirrored, so Traefik adds the mirror header.
    Callers must not modify the returned dict."""
    # A prefix carries every method, like the catch-all: no blind retries.
    retry = (RETRY,) if endpoint.method in IDEMPOTENT else ()
    middlewares = ((MIRROR_MARK,) if marked else ()) + retry
    return _router(endpoint.id, rule(endpoint), priority(endpoint), service, entrypoints, middlewares)


Sets = Mapping[str, Sequence[str]]


def traefik_service(backend: str, monolith: str = MONOLITH, sets: Sets | None = None) -> str:
    """PURE: the Traefik service of route backend *backend* (routes call the monolith "monolith";
    its Traefik service is *monolith*).

    ``sets`` (blue/green, see :func:`backend_services`) maps a backend's own
    service name to its instance sets' services, the live one first: routers
    point at the live one.
    """
    name = monolith if backend == MONOLITH else backend
    found = (sets or {}).get(name)
    return found[0] if found else name


def backend_services(name: str, sets: Sets | None = None) -> list[str]:
    """PURE: every Traefik service of the backend whose own service is ``name``: the live set's
    first, then a blue/green's other set while one is pending (both declared, health-checked)."""
    return list((sets or {}).get(name) or [name])


def colour_service(name: str, live: str) -> str:
    """PURE: the service a blue/green of backend ``name`` starts its new set under: the backend's
    own name ("blue") when the live set is ``<name>-green``, ``<name>-green`` otherwise."""
    return name if live != name else f"{name}{GREEN_SUFFIX}"


def canary_service(router: str) -> str:
    """PURE: the weighted service of the canary on router *router*."""
    return f"{router}-canary"


def shadow_service(router: str) -> str:
    """PURE: the mirroring service of the shadow on router *router*."""
    return f"{router}-shadow"


class ShadowSpec(NamedTuple):
    """What Traefik's API shows of a shadowed route: its router's mirroring service, which
    copies ``percent`` % of the requests."""

    service: str
    percent: int


def live_spec(routes: Iterable[Route], monolith: str = MONOLITH,
              sets: Sets | None = None) -> dict[str, str | dict[str, int] | ShadowSpec]:
    """PURE: what Traefik's API shows once *routes* are live: router -> its service, or the
    canary's weights per Traefik service (the same names :func:`traefik_keys` writes).

    A shadowed route's router shows its mirroring service, with the share it
    copies (a :class:`ShadowSpec`); the service it mirrors from is checked
    under the mirroring service's name (``{"main": ..., "mirror": ...}``
    would need another API call, so a blue/green switch confirms shadows by the
    routers it does see)."""
    spec: dict[str, str | dict[str, int] | ShadowSpec] = {}
    for route in routes:
        name = route.endpoint.id
        if route.mirror:
            spec[name] = ShadowSpec(shadow_service(name), route.mirror_percent)
        elif route.weights:
            spec[name] = {traefik_service(b, monolith, sets): w for b, w in route.weights.items()}
        else:
            spec[name] = traefik_service(route.backend, monolith, sets)
        if route.match:
            spec[ab_router(name)] = traefik_service(route.match.backend, monolith, sets)
    return spec


def entrypoints_of(endpoint: Endpoint | None, entrypoint: str, internal: str | None) -> tuple[str, ...]:
    """PURE: the entrypoints a router listens on (``endpoint`` None: the catch-all).

    Without an internal entrypoint, everything is on ``entrypoint`` (as before
    there was one). With it, an ``/internal/`` endpoint is on ``internal``
    only, and every other router on both, so services calling through the
    internal entrypoint reach every endpoint.
    """
    if internal is None:
        return (entrypoint,)
    if endpoint is not None and endpoint.is_internal:
        return (internal,)
    return (entrypoint, internal)


def _sticky(base: str, service: str) -> dict[str, str]:
    """PURE: sticky-cookie session affinity for one load balancer at ``base``.

    With one instance the cookie changes nothing; with several, every request
    of a session reaches the instance that served its first one (a drained
    instance's cookie is ignored and the client lands on another).
    """
    return {base + "sticky/cookie/name": STICKY_COOKIE + service,
            base + "sticky/cookie/httpOnly": "true",
            base + "sticky/cookie/sameSite": "lax"}


def endpoint_prefixes(endpoint: Endpoint) -> tuple[str, ...]:
    """PURE: the key prefixes holding every key :func:`route_keys` derives for ``endpoint``:
    its router and A/B router, and the weighted (canary) and mirroring (shadow) services named after it.

    A change that touches a few endpoints reads only these (and the shared keys,
    :func:`shared_prefixes`), not the whole ``traefik/`` tree.
    """
    name = endpoint.id
    return (f"{ROOT}/http/routers/{name}/", f"{ROOT}/http/routers/{ab_router(name)}/",
            f"{ROOT}/http/services/{canary_service(name)}/", f"{ROOT}/http/services/{shadow_service(name)}/")


def route_keys(
    route: Route,
    *,
    monolith: str = MONOLITH,
    entrypoint: str = "web",
    internal_entrypoint: str | None = None,
    mirror_secret: str | None = None,
    sets: Sets | None = None,
    sticky: Iterable[str] = (),
) -> dict[str, str]:
    """PURE: the keys of one route, all under :func:`endpoint_prefixes`: its router, and its
    weighted service (a canary) and mirroring service (a shadow) when it has them.

    See :func:`traefik_keys` for what the options mean; a new dict each call.
    """

    def svc(backend: str) -> str:
        return traefik_service(backend, monolith, sets)

    name = route.endpoint.id
    keys: dict[str, str] = {}
    service = svc(route.backend)
    if route.weights:
        service = canary_service(name)
        base = f"{ROOT}/http/services/{service}/weighted/services/"
        for i, (backend, weight) in enumerate(sorted(route.weights.items())):
            keys[f"{base}{i}/name"] = svc(backend)
            keys[f"{base}{i}/weight"] = str(weight)
        if route.sticky or holds_sessions(route) or needs_sticky(route, monolith, sticky):
            # Traefik remembers the side it chose in this cookie: one user (or one
            # Socket.IO session), one side.
            cookie = f"{ROOT}/http/services/{service}/weighted/sticky/cookie/"
            keys[cookie + "name"] = sticky_cookie(name)
            keys[cookie + "httpOnly"] = "true"
            keys[cookie + "sameSite"] = "lax"
    if route.mirror:
        main, service = service, shadow_service(name)
        base = f"{ROOT}/http/services/{service}/mirroring/"
        keys[base + "service"] = main
        keys[base + "mirrors/0/name"] = svc(route.mirror)
        keys[base + "mirrors/0/percent"] = str(route.mirror_percent)
        # Traefik buffers a body to copy it: bounded, and a larger one is not mirrored.
        keys[base + "maxBodySize"] = str(MIRROR_MAX_BODY)
    entrypoints = entrypoints_of(route.endpoint, entrypoint, internal_entrypoint)
    keys |= _endpoint_router(route.endpoint, service, entrypoints, bool(route.mirror and mirror_secret))
    if route.match:
        retry = (RETRY,) if route.endpoint.method in IDEMPOTENT else ()
        keys |= _router(ab_router(name), match_rule(route.endpoint, route.match),
                        ab_priority(route.endpoint), svc(route.match.backend), entrypoints, retry)
    return keys


def holds_sessions(route: Route) -> bool:
    """PURE: whether the route's clients hold a session across requests (Socket.IO long-polling)."""
    return route.endpoint.is_prefix and route.endpoint.path in SESSION_PREFIXES


def needs_sticky(route: Route, monolith: str = MONOLITH, sticky: Iterable[str] = ()) -> bool:
    """PURE: whether a backend the route sends traffic to is declared sticky (``sticky = true``
    in the plan; ``sticky`` names their own Traefik services)."""
    declared = set(sticky)
    return bool(declared) and any((monolith if b == MONOLITH else b) in declared for b in route.backends)


def shared_backends(routes: Iterable[Route], monolith: str = MONOLITH,
                    healthchecks: Mapping[str, str] | None = None, sets: Sets | None = None) -> set[str]:
    """PURE: the Traefik services whose load balancers :func:`shared_keys` declares: every set
    (:func:`backend_services`) of the monolith, of each health-checked backend and of each one a
    route uses."""
    return {service for name in _own_names(routes, monolith, healthchecks)
            for service in backend_services(name, sets)}


def _own_names(routes: Iterable[Route], monolith: str, healthchecks: Mapping[str, str] | None) -> set[str]:
    names = {monolith} | set(healthchecks or {})
    for route in routes:
        names |= {monolith if b == MONOLITH else b for b in route.backends}
    return names


def shared_prefixes(backends: Iterable[str]) -> tuple[str, ...]:
    """PURE: the key prefixes holding every key :func:`shared_keys` derives for ``backends``
    (the load balancers' prefixes also hold the registry's server keys, never ours)."""
    return (f"{ROOT}/http/middlewares/", f"{ROOT}/http/routers/{CATCHALL}/",
            *(service_key(b) for b in sorted(backends)))


def shared_keys(
    routes: Iterable[Route],
    *,
    monolith: str = MONOLITH,
    entrypoint: str = "web",
    internal_entrypoint: str | None = None,
    mirror_secret: str | None = None,
    healthchecks: Mapping[str, str] | None = None,
    healthcheck_interval: str = "2s",
    healthcheck_timeout: str = "1s",
    sets: Sets | None = None,
    sticky: Iterable[str] = (),
) -> dict[str, str]:
    """PURE: the keys not of one route: the retry (and mirror-mark) middleware, the catch-all
    router, and a load balancer (with its health check) per backend any route uses, sticky
    for the backends of a route holding sessions and for those declared ``sticky``.

    Each of a backend's sets (:func:`backend_services`) gets its own load balancer, health
    check and sticky cookie. See :func:`traefik_keys` for what the options mean.
    """
    middleware = f"{ROOT}/http/middlewares/{RETRY}/retry/"
    keys: dict[str, str] = {middleware + "attempts": str(RETRY_ATTEMPTS),
                            middleware + "initialInterval": RETRY_INTERVAL}
    keys |= {f"{middleware}status/{i}": status for i, status in enumerate(RETRY_STATUS)}
    keys |= _router(CATCHALL, "PathPrefix(`/`)", 1, traefik_service(MONOLITH, monolith, sets),
                    entrypoints_of(None, entrypoint, internal_entrypoint), middlewares=())
    if mirror_secret:
        keys[f"{ROOT}/http/middlewares/{MIRROR_MARK}/headers/customRequestHeaders/{MIRROR_HEADER}"] = mirror_secret
    routes = list(routes)
    declared = shared_backends(routes, monolith, healthchecks, sets)
    for backend in sorted(declared):
        # Declares the load balancer even before any instance registers, so
        # routers pointing at it resolve (503, not 404) while it is empty.
        keys[service_key(backend) + "passhostheader"] = "true"
    held = {monolith if b == MONOLITH else b for r in routes if holds_sessions(r)
            for b in {r.backend, *(r.weights or {})}}
    for name in sorted(held | (set(sticky) & _own_names(routes, monolith, healthchecks))):
        for backend in backend_services(name, sets):
            keys |= _sticky(service_key(backend), backend)
    for name, path in sorted((healthchecks or {}).items()):
        for backend in backend_services(name, sets):
            keys[service_key(backend) + "healthcheck/path"] = path
            keys[service_key(backend) + "healthcheck/interval"] = healthcheck_interval
            keys[service_key(backend) + "healthcheck/timeout"] = healthcheck_timeout
    return keys


def traefik_keys(
    routes: Iterable[Route],
    *,
    monolith: str = MONOLITH,
    entrypoint: str = "web",
    internal_entrypoint: str | None = None,
    mirror_secret: str | None = None,
    healthchecks: Mapping[str, str] | None = None,
    healthcheck_interval: str = "2s",
    healthcheck_timeout: str = "1s",
    sets: Sets | None = None,
    sticky: Iterable[str] = (),
) -> dict[str, str]:
    """Every key/value Traefik needs (under root ``traefik``) for these routes.

    One router per endpoint (and an A/B router beside it for a route with a
    ``match``), a weighted service per canary (sticky when asked), a mirroring
    service per shadow (:func:`route_keys`), and the catch-all router to the
    monolith, the retry middleware, and per backend load balancer its health
    check (when `healthchecks` maps backend -> path) (:func:`shared_keys`).
    The backend "monolith" is Traefik's
    service `monolith`. Instance servers are not here: they
    register themselves with leases (router.registry.server_key). Routers
    listen on ``entrypoint``, and on ``internal_entrypoint`` as
    :func:`entrypoints_of` says. With ``mirror_secret``, a shadowed
    router adds header MIRROR_HEADER (that secret) to the requests it
    mirrors, and to the copy the monolith answers: the comparator takes only
    copies carrying it. ``sets`` (a blue/green) points a backend's routers at
    its live set's Traefik service and declares every set; ``sticky`` names the
    backends (their own service names) whose load balancers, and canaries,
    get the sticky cookie. Raises ValueError when two endpoints would share a
    router name.
    """
    routes = sorted(routes, key=lambda r: r.endpoint.id)
    keys = shared_keys(routes, monolith=monolith, entrypoint=entrypoint,
                       internal_entrypoint=internal_entrypoint, mirror_secret=mirror_secret,
                       healthchecks=healthchecks, healthcheck_interval=healthcheck_interval,
                       healthcheck_timeout=healthcheck_timeout, sets=sets, sticky=sticky)
    seen: dict[str, Endpoint] = {}
    for route in routes:
        name = route.endpoint.id
        if name in seen:
            raise ValueError(
                f"endpoints {seen[name]} and {route.endpoint} share the "
                f"router name {name!r}; rename one of them"
            )
        seen[name] = route.endpoint
        keys |= route_keys(route, monolith=monolith, entrypoint=entrypoint,
                           internal_entrypoint=internal_entrypoint, mirror_secret=mirror_secret,
                           sets=sets, sticky=sticky)
    return keys
