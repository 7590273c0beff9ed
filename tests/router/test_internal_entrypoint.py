"""The internal entrypoint through a real Traefik: /internal/ paths are routed on it only.

Traefik runs the toolkit's static config (``internal_port`` given) and the
table's options name the internal entrypoint, as ``strangler up`` does. A
request on the public entrypoint to an /internal/ path falls to the
catch-all (the monolith, which has no such route); the same request on the
internal entrypoint reaches the service, and so does every public endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import servers

from router import table
from router.keys import INTERNAL_ENTRYPOINT
from router.traefik import TraefikAPI, seed_root_key, static_config, write_static_config
from strangler.stack import procs

pytestmark = pytest.mark.integration

ENDPOINTS = {"POST /internal/users/authenticate": "users", "PUT /internal/users/<id>/seen": "users",
             "GET /api/users": "users", "GET /healthz": "monolith"}


def named(name: str):
    """A WSGI app answering its own name to every request."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [name.encode()]
    return app


@pytest.fixture(scope="module")
def traefik(etcd_server, tmp_path_factory) -> Iterator[tuple[str, str, str]]:
    """Traefik with web, internal and API entrypoints; yields their URLs."""
    work = tmp_path_factory.mktemp("traefik-internal")
    web, internal, api = procs.free_port(), procs.free_port(), procs.free_port()
    cfg = static_config(web_port=web, api_port=api, etcd_endpoints=[etcd_server.url], internal_port=internal)
    seed_root_key(etcd_server.client())
    proc = procs.start_traefik(write_static_config(work / "traefik.yml", cfg))
    try:
        yield f"http://127.0.0.1:{web}", f"http://127.0.0.1:{internal}", proc.url
    finally:
        proc.stop()


def test_internal_paths_answer_only_on_the_internal_entrypoint(etcd_server, traefik) -> None:
    web, internal, api = traefik
    kv = etcd_server.client()
    with servers.serving(named("monolith")) as monolith, servers.serving(named("users")) as users:
        lease = kv.lease(60)
        for name, url in (("monolith", monolith), ("users", users)):
            kv.put(f"traefik/http/services/{name}/loadbalancer/servers/{name}-1/url", url, lease=lease)

        def everything_to_its_owner(routes):
            from router.keys import Route, parse_endpoint

            return [Route(parse_endpoint(spec), backend) for spec, backend in ENDPOINTS.items()]

        table.apply(kv, everything_to_its_owner, who="t@h", what="routes",
                    options=table.Options(internal_entrypoint=INTERNAL_ENTRYPOINT))
        TraefikAPI(api).wait_live({"post-internal-users-authenticate": "users", "get-api-users": "users",
                                   "put-internal-users-id-seen": "users"})
        probes = [("POST", "/internal/users/authenticate"), ("PUT", "/internal/users/7/seen"),
                  ("PUT", "/internal/users/7/offline"), ("GET", "/internal/anything")]
        for method, path in probes:
            # the public entrypoint has no router for it: the catch-all's monolith gets it
            assert requests.request(method, web + path, timeout=5).text == "monolith", path
        for method, path in probes[:2]:
            assert requests.request(method, internal + path, timeout=5).text == "users", path
        # services call public endpoints through the internal entrypoint too
        assert requests.get(internal + "/api/users", timeout=5).text == "users"
        assert requests.get(internal + "/healthz", timeout=5).text == "monolith"
        assert requests.get(web + "/api/users", timeout=5).text == "users"
        routers = TraefikAPI(api).routers()
        ours = {name: r for name, r in routers.items() if name.endswith("@etcd")}
        assert {r["status"] for r in ours.values()} == {"enabled"}
        assert ours["post-internal-users-authenticate@etcd"]["entryPoints"] == ["internal"]
        assert sorted(ours["get-api-users@etcd"]["entryPoints"]) == ["internal", "web"]
        lease.revoke()
