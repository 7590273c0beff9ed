"""Traefik's static configuration (pure) and a small client for its API.

The static config says where Traefik listens and that its routing comes from
etcd; everything dynamic (routers, services, servers) lives under the root
key in etcd and is written elsewhere (``router.keys``, ``router.registry``).
The API client lets a flip wait until Traefik actually routes as asked.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import urllib3

from router.keys import INTERNAL_ENTRYPOINT, ShadowSpec

PROVIDER = "etcd"
# Latency buckets (seconds) of Traefik's Prometheus histograms. Traefik's default
# (0.1, 0.3, 1.2, 5) cannot tell a 10 ms answer from a 90 ms one; promotion compares
# p99s (strangler.promote), so the buckets start at 5 ms (docs/promotion.md).
METRIC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def static_config(
    *,
    web_port: int,
    api_port: int,
    etcd_endpoints: list[str],
    root_key: str = "traefik",
    throttle: str = "50ms",
    access_log_path: str | None = None,
    metrics: bool = True,
    host: str = "127.0.0.1",
    internal_port: int | None = None,
    internal_host: str = "127.0.0.1",
    etcd_username: str | None = None,
    etcd_password: str | None = None,
) -> dict:
    """Return Traefik's static configuration as a dict, ready for YAML.

    ``web`` is the public entrypoint; ``traefik`` (loopback) carries the API,
    dashboard, ping and Prometheus metrics; with ``internal_port``,
    ``internal`` (loopback unless ``internal_host`` says otherwise) carries
    the services' calls to each other, ``/internal/`` paths included, which
    ``web`` never routes (see router.keys). ``etcd_endpoints`` are
    ``host:port`` (a leading ``http://`` is dropped: Traefik wants none).
    The throttle is kept short because Traefik's 2 s default holds back the
    second of two quick changes (a flip right after another) by ~1.7 s.
    ``etcd_username``/``etcd_password``: for an etcd with authentication
    (docker/etcd-auth.sh makes the read-only user ``traefik``); keep such a
    config out of files others can read, or pass it with :func:`static_env`.
    """
    endpoints = [_strip_scheme(e) for e in etcd_endpoints]
    if not endpoints:
        raise ValueError("etcd_endpoints is empty; give at least one host:port")
    cfg: dict[str, Any] = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "log": {"level": "INFO", "noColor": True},
        "entryPoints": {
            # The backends are WSGI apps, which read X_Forwarded_For as X-Forwarded-For:
            # drop headers that alias the ones Traefik sets, so clients cannot spoof them.
            "web": {"address": f"{host}:{web_port}", "http": {"aliasHeadersStrategy": "delete"}},
            # api.insecure serves the API on the entrypoint named "traefik": keep it on loopback.
            "traefik": {"address": f"127.0.0.1:{api_port}", "http": {"aliasHeadersStrategy": "delete"}},
        },
        "providers": {
            "providersThrottleDuration": throttle,
            "etcd": {"endpoints": endpoints, "rootKey": root_key},
        },
        "api": {"dashboard": True, "insecure": True},
        # Close pooled backend connections idle for 1 s, before gunicorn's keep-alive
        # (2 s) closes them: otherwise a request sent on a connection the backend is
        # closing at that instant fails with a 502, and Traefik never retries a POST.
        # Flips leave a backend idle for a moment, which is exactly when that happens.
        "serversTransport": {"forwardingTimeouts": {"idleConnTimeout": "1s"}},
        "ping": {"entryPoint": "traefik"},
        "accessLog": {"format": "json"},
    }
    if etcd_username:
        cfg["providers"]["etcd"] |= {"username": etcd_username, "password": etcd_password or ""}
    if internal_port is not None:
        cfg["entryPoints"][INTERNAL_ENTRYPOINT] = {
            "address": f"{internal_host}:{internal_port}", "http": {"aliasHeadersStrategy": "delete"}}
    if access_log_path:
        cfg["accessLog"]["filePath"] = str(access_log_path)
    if metrics:
        # Per router (= per endpoint) and per service, on the loopback-only entrypoint:
        # the console's requests/s, errors and latency, the promotion controller's analysis.
        cfg["metrics"] = {"prometheus": {"entryPoint": "traefik", "addRoutersLabels": True,
                                         "addServicesLabels": True, "addEntryPointsLabels": True,
                                         "buckets": list(METRIC_BUCKETS)}}
    return cfg


def static_env(cfg: Mapping[str, Any], prefix: str = "TRAEFIK") -> dict[str, str]:
    """PURE: ``cfg`` (a static config) as Traefik's environment variables.

    ``{"providers": {"etcd": {"rootKey": "traefik"}}}`` becomes
    ``TRAEFIK_PROVIDERS_ETCD_ROOTKEY=traefik``; lists are comma-joined,
    booleans ``true``/``false``. Traefik reads its static config from ONE
    source (a file wins over the environment), so where a secret must join
    it (the etcd provider's password in docker-compose.yml), the whole
    config goes in the environment and the secret with it.
    """
    env: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}_{key.upper()}"
        if isinstance(value, Mapping):
            env |= static_env(value, name)
        elif isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            env[name] = ",".join(str(item) for item in value)
        else:
            env[name] = str(value)
    return env


def _strip_scheme(endpoint: str) -> str:
    for scheme in ("http://", "https://"):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme) :].rstrip("/")
    return endpoint


def seed_root_key(etcd: Any, root_key: str = "traefik") -> None:
    """Put an empty ``root_key`` into etcd (through ``router.etcd.Etcd``) if it is missing.

    Traefik's etcd provider fails its watch while nothing exists under the
    root key and retries with a growing back-off, so routes written a few
    seconds after start would show up seconds late. Call this before
    starting Traefik; Traefik ignores the empty value.
    """
    if etcd.get(root_key) is None:
        etcd.put(root_key, "")


def write_static_config(path: Path | str, cfg: dict) -> Path:
    """Write ``cfg`` as YAML to ``path`` (parents created) and return the path.

    The file is its owner's only (0600): the config may carry credentials
    (etcd's, the API's). A missing parent is created 0700.
    """
    import yaml  # only the stack's start writes YAML; routing commands skip its import

    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file an older version wrote 0644 is tightened too
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(yaml.safe_dump(cfg, sort_keys=False))
    return path


class TraefikError(RuntimeError):
    """Traefik's API could not be reached or did not reach the expected state (one line)."""


def qualify(name: str, provider: str = PROVIDER) -> str:
    """``name@provider`` as Traefik's API names things (unchanged when already qualified)."""
    return name if "@" in name else f"{name}@{provider}"


# A spec maps router name -> service name, or -> {service name: weight} for a canary.
RoutingSpec = Mapping[str, "str | Mapping[str, int] | ShadowSpec"]
# wait_live reads a spec of up to this many routers by name, a larger one as whole lists.
NAMED_MAX = 8


class TraefikAPI:
    """Read Traefik's live routing from its API (``base_url`` = the ``traefik`` entrypoint)."""

    def __init__(self, base_url: str, timeout: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # One keep-alive connection, reused by every poll of wait_live. urllib3
        # rather than requests: the etcd client loads it anyway, and a routing
        # command then never pays for importing requests.
        self._pool = urllib3.PoolManager(maxsize=2, retries=False)

    def _get(self, path: str) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = self._pool.request("GET", url, timeout=self.timeout)
        except urllib3.exceptions.HTTPError as exc:
            raise TraefikError(f"Traefik API at {self.base_url} unreachable: {exc.__class__.__name__}") from exc
        if response.status == 404:
            return None
        if not 200 <= response.status < 400:
            raise TraefikError(f"Traefik API {url} answered {response.status}")
        try:
            return json.loads(response.data)
        except ValueError as exc:
            raise TraefikError(f"Traefik API {url} answered something that is not JSON") from exc

    def _by_name(self, path: str) -> dict[str, dict]:
        # The list endpoints page at 100 by default; ask for enough in one go.
        items = self._get(f"{path}?per_page=10000") or []
        return {item["name"]: item for item in items}

    def overview(self) -> dict:
        """``/api/overview``: counts of routers, services and middlewares by status."""
        return self._get("/api/overview") or {}

    def routers(self) -> dict[str, dict]:
        """Every HTTP router, by qualified name (``name@provider``)."""
        return self._by_name("/api/http/routers")

    def services(self) -> dict[str, dict]:
        """Every HTTP service, by qualified name (``name@provider``)."""
        return self._by_name("/api/http/services")

    def router(self, name: str) -> dict | None:
        """One router by name (``@etcd`` assumed when unqualified), None if Traefik has none."""
        return self._get(f"/api/http/routers/{qualify(name)}")

    def service(self, name: str) -> dict | None:
        """One service by name (``@etcd`` assumed when unqualified), None if Traefik has none."""
        return self._get(f"/api/http/services/{qualify(name)}")

    def named(self, spec: RoutingSpec) -> tuple[dict[str, dict], dict[str, dict]]:
        """The routers ``spec`` names and the services they point at, by qualified name.

        Small requests by name instead of the whole lists, which run to
        megabytes with thousands of endpoints; missing ones are left out. A
        service is asked for only once its router points at the one ``spec``
        wants (a weighted one always): until then the router alone proves the
        change is not live yet, so a poll costs one request per router.
        """
        routers: dict[str, dict] = {}
        services: dict[str, dict] = {}
        for name, wanted in spec.items():
            router = self.router(name)
            if router is None:
                continue
            routers[qualify(name)] = router
            service_name = router.get("service", "")
            if isinstance(wanted, str | ShadowSpec) and qualify(service_name) != qualify(_service_of(wanted)):
                continue
            if service_name and qualify(service_name) not in services:
                service = self.service(service_name)
                if service is not None:
                    services[qualify(service_name)] = service
        return routers, services

    def wait_live(
        self,
        expect: RoutingSpec | Callable[[dict, dict], bool],
        timeout: float = 10.0,
        interval: float | None = None,
    ) -> float:
        """Poll the API until the expected routing is live; return the seconds it took.

        ``expect`` is either a predicate over ``(routers, services)`` (dicts by
        qualified name) or a spec: router name -> service name, or router name
        -> ``{service: weight}`` for a weighted service. Raises TraefikError
        saying what was still missing when ``timeout`` passes.

        A spec of up to NAMED_MAX routers is polled by name every 10 ms
        (default ``interval``; a poll is one small request per router); a
        predicate or a larger spec reads the whole lists every 50 ms.
        """
        by_name = not callable(expect) and len(expect) <= NAMED_MAX
        read = (lambda: self.named(expect)) if by_name else (lambda: (self.routers(), self.services()))
        interval = interval if interval is not None else (0.01 if by_name else 0.05)
        check = expect if callable(expect) else (lambda r, s: not spec_mismatches(expect, r, s))
        start = time.monotonic()
        last_problem = "nothing read yet"
        while True:
            try:
                routers, services = read()
                if check(routers, services):
                    return time.monotonic() - start
                if not callable(expect):
                    last_problem = "; ".join(spec_mismatches(expect, routers, services)[:3])
                else:
                    last_problem = "the check still fails"
            except TraefikError as exc:
                last_problem = str(exc)
            if time.monotonic() - start > timeout:
                raise TraefikError(f"Traefik did not apply the change within {timeout:g}s: {last_problem}")
            time.sleep(interval)


def _service_of(wanted: str | ShadowSpec) -> str:
    return wanted.service if isinstance(wanted, ShadowSpec) else wanted


def spec_mismatches(spec: RoutingSpec, routers: dict, services: dict) -> list[str]:
    """PURE: what in ``routers``/``services`` (API dicts) differs from ``spec``; [] when live.

    A router counts when it is enabled and names the wanted service; a service
    when Traefik has it enabled; a weighted one also needs exactly the given
    children and weights.
    """
    problems: list[str] = []
    for router_name, wanted in spec.items():
        router = routers.get(qualify(router_name))
        if router is None:
            problems.append(f"router {router_name} missing")
            continue
        if router.get("status") != "enabled":
            problems.append(f"router {router_name} is {router.get('status')}: {router.get('error')}")
            continue
        service_name = router.get("service", "")
        service = services.get(qualify(service_name))
        if isinstance(wanted, str | ShadowSpec):
            name = _service_of(wanted)
            if qualify(service_name) != qualify(name):
                problems.append(f"router {router_name} -> {service_name}, not {name}")
            elif service is None or service.get("status") != "enabled":
                problems.append(f"service {name} not live")
            elif isinstance(wanted, ShadowSpec) and [
                m.get("percent") for m in (service.get("mirroring") or {}).get("mirrors", [])
            ] != [wanted.percent]:
                problems.append(f"service {name} does not copy {wanted.percent}% yet")
            continue
        if service is None or service.get("status") != "enabled":
            problems.append(f"router {router_name}: weighted service {service_name} not live")
            continue
        live = {
            qualify(child["name"]): child.get("weight")
            for child in (service.get("weighted") or {}).get("services", [])
        }
        expected = {qualify(name): weight for name, weight in wanted.items()}
        if live != expected:
            problems.append(f"router {router_name} weights {live}, not {expected}")
    return problems
