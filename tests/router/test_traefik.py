"""router.traefik: the static config (pure), and the API client against a real Traefik."""

from __future__ import annotations

import http.server
import threading
import time
import uuid

import pytest
import requests
import yaml

from router.keys import ShadowSpec
from router.traefik import (
    TraefikError,
    spec_mismatches,
    static_config,
    write_static_config,
)


def _cfg(**overrides):
    args = {"web_port": 8000, "api_port": 8081, "etcd_endpoints": ["http://127.0.0.1:2379"]}
    return static_config(**(args | overrides))


def _ms(duration: str) -> float:
    for suffix, factor in (("ms", 1), ("s", 1000)):
        if duration.endswith(suffix):
            return float(duration[: -len(suffix)]) * factor
    raise AssertionError(f"unexpected duration {duration}")


def test_entrypoints_listen_on_loopback():
    cfg = _cfg(web_port=8123, api_port=8124)
    assert cfg["entryPoints"]["web"]["address"] == "127.0.0.1:8123"
    assert cfg["entryPoints"]["traefik"]["address"] == "127.0.0.1:8124"


def test_api_stays_on_loopback_even_when_web_is_public():
    cfg = _cfg(host="0.0.0.0", api_port=9999)
    assert cfg["entryPoints"]["web"]["address"] == "0.0.0.0:8000"
    assert cfg["entryPoints"]["traefik"]["address"] == "127.0.0.1:9999"
    assert cfg["api"] == {"dashboard": True, "insecure": True}


def test_etcd_provider_gets_host_port_endpoints_and_root_key():
    cfg = _cfg(etcd_endpoints=["http://127.0.0.1:2379/", "10.0.0.2:2379"], root_key="edge")
    assert cfg["providers"]["etcd"] == {"endpoints": ["127.0.0.1:2379", "10.0.0.2:2379"], "rootKey": "edge"}


def test_empty_endpoints_are_refused():
    with pytest.raises(ValueError, match="etcd_endpoints"):
        _cfg(etcd_endpoints=[])


def test_throttle_is_short_by_default():
    assert _ms(_cfg()["providers"]["providersThrottleDuration"]) <= 100
    assert _cfg(throttle="20ms")["providers"]["providersThrottleDuration"] == "20ms"


def test_metrics_access_log_and_quiet_globals():
    cfg = _cfg(access_log_path="/tmp/x/access.log")
    assert cfg["metrics"] == {"prometheus": {
        "entryPoint": "traefik", "addRoutersLabels": True, "addServicesLabels": True,
        "addEntryPointsLabels": True,
        "buckets": [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]}}
    assert cfg["accessLog"] == {"format": "json", "filePath": "/tmp/x/access.log"}
    assert cfg["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    assert cfg["log"]["level"] == "INFO"
    assert "metrics" not in _cfg(metrics=False)
    assert "filePath" not in _cfg()["accessLog"]


def test_write_static_config_round_trips(tmp_path):
    cfg = _cfg()
    path = write_static_config(tmp_path / "sub" / "traefik.yml", cfg)
    assert yaml.safe_load(path.read_text()) == cfg


# -- spec_mismatches on API-shaped dicts --------------------------------------

ROUTERS = {
    "r@etcd": {"name": "r@etcd", "status": "enabled", "service": "users"},
    "w@etcd": {"name": "w@etcd", "status": "enabled", "service": "split"},
    "bad@etcd": {"name": "bad@etcd", "status": "disabled", "error": ["no service"], "service": "x"},
}
SERVICES = {
    "users@etcd": {"name": "users@etcd", "status": "enabled"},
    "split@etcd": {
        "name": "split@etcd",
        "status": "enabled",
        "weighted": {"services": [{"name": "monolith", "weight": 9}, {"name": "users", "weight": 1}]},
    },
}


def test_spec_matches_plain_and_weighted_routing():
    assert spec_mismatches({"r": "users", "w": {"monolith": 9, "users": 1}}, ROUTERS, SERVICES) == []


def test_spec_names_each_difference():
    problems = spec_mismatches(
        {"r": "monolith", "w": {"monolith": 1, "users": 1}, "gone": "users", "bad": "x"},
        ROUTERS,
        SERVICES,
    )
    assert len(problems) == 4
    assert "router r -> users, not monolith" in problems
    assert any(p.startswith("router w weights") for p in problems)
    assert "router gone missing" in problems
    assert any(p.startswith("router bad is disabled") for p in problems)


def test_spec_needs_the_service_live():
    assert spec_mismatches({"r": "users"}, ROUTERS, {}) == ["service users not live"]


def test_a_shadow_spec_needs_the_share_it_names():
    routers = {"s@etcd": {"name": "s@etcd", "status": "enabled", "service": "s-shadow"}}
    services = {"s-shadow@etcd": {"name": "s-shadow@etcd", "status": "enabled",
                                  "mirroring": {"service": "monolith", "mirrors": [{"name": "comparator", "percent": 100}]}}}
    assert spec_mismatches({"s": ShadowSpec("s-shadow", 100)}, routers, services) == []
    assert spec_mismatches({"s": ShadowSpec("s-shadow", 25)}, routers, services) == [
        "service s-shadow does not copy 25% yet"]
    assert spec_mismatches({"s": ShadowSpec("other", 25)}, routers, services) == ["router s -> s-shadow, not other"]


# -- against a real Traefik ---------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    """A tiny HTTP backend answering its own name."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"tiny")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _route(etcd, router, service, path, backend_url):
    etcd.txn(
        puts={
            f"traefik/http/services/{service}/loadbalancer/servers/one/url": backend_url,
            f"traefik/http/routers/{router}/rule": f"Path(`{path}`)",
            f"traefik/http/routers/{router}/service": service,
            f"traefik/http/routers/{router}/entryPoints/0": "web",
        }
    )


@pytest.mark.integration
def test_traefik_serves_api_ping_and_metrics(traefik_server):
    assert requests.get(f"{traefik_server.api_url}/ping", timeout=2).text == "OK"
    assert requests.get(f"{traefik_server.api_url}/metrics", timeout=2).status_code == 200
    assert "http" in traefik_server.api.overview()


@pytest.mark.integration
def test_wait_live_sees_a_new_router_and_traffic_flows(traefik_server, backend):
    etcd = traefik_server.etcd.client()
    name = f"r{uuid.uuid4().hex[:8]}"
    _route(etcd, name, f"{name}-svc", f"/{name}", backend)
    took = traefik_server.api.wait_live({name: f"{name}-svc"}, timeout=10)
    assert took < 10
    assert traefik_server.api.router(name)["service"] == f"{name}-svc"
    assert f"{name}@etcd" in traefik_server.api.routers()
    assert f"{name}-svc@etcd" in traefik_server.api.services()
    assert requests.get(f"{traefik_server.web_url}/{name}", timeout=2).text == "tiny"
    assert traefik_server.api.router("no-such-router") is None


@pytest.mark.integration
def test_wait_live_times_out_naming_what_is_missing(traefik_server):
    with pytest.raises(TraefikError, match="router never-written missing"):
        traefik_server.api.wait_live({"never-written": "users"}, timeout=0.3)


@pytest.mark.integration
def test_wait_live_accepts_a_predicate_and_weights(traefik_server, backend):
    etcd = traefik_server.etcd.client()
    name = f"w{uuid.uuid4().hex[:8]}"
    _route(etcd, name, f"{name}-a", f"/{name}", backend)
    etcd.txn(
        puts={
            f"traefik/http/services/{name}-b/loadbalancer/servers/one/url": backend,
            f"traefik/http/services/{name}-split/weighted/services/0/name": f"{name}-a",
            f"traefik/http/services/{name}-split/weighted/services/0/weight": "3",
            f"traefik/http/services/{name}-split/weighted/services/1/name": f"{name}-b",
            f"traefik/http/services/{name}-split/weighted/services/1/weight": "1",
            f"traefik/http/routers/{name}/service": f"{name}-split",
        }
    )
    traefik_server.api.wait_live({name: {f"{name}-a": 3, f"{name}-b": 1}}, timeout=10)
    assert traefik_server.api.wait_live(lambda routers, services: f"{name}-b@etcd" in services, 5) >= 0


@pytest.mark.integration
def test_a_change_right_after_another_is_live_within_a_second(traefik_server, backend):
    # With Traefik's default 2 s throttle the second change would lag ~1.7 s.
    etcd = traefik_server.etcd.client()
    name = f"t{uuid.uuid4().hex[:8]}"
    _route(etcd, name, f"{name}-a", f"/{name}", backend)
    etcd.put(f"traefik/http/services/{name}-b/loadbalancer/servers/one/url", backend)
    traefik_server.api.wait_live({name: f"{name}-a"}, timeout=10)
    etcd.put(f"traefik/http/routers/{name}/service", f"{name}-b")
    time.sleep(0.05)
    etcd.put(f"traefik/http/routers/{name}/service", f"{name}-a")
    time.sleep(0.05)
    etcd.put(f"traefik/http/routers/{name}/service", f"{name}-b")
    assert traefik_server.api.wait_live({name: f"{name}-b"}, timeout=5) < 1.2
