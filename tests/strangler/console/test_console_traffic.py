"""strangler.console.traffic: Traefik's Prometheus text to per-endpoint figures, on exact values."""

from __future__ import annotations

import pytest

from strangler.console.traffic import RouterCounts, between, parse_all, parse_metrics, quantile

METRICS = """\
# HELP traefik_router_requests_total How many HTTP requests are processed on a router.
# TYPE traefik_router_requests_total counter
traefik_router_requests_total{code="200",method="GET",protocol="http",router="get-api-users@etcd",service="monolith@etcd"} 90
traefik_router_requests_total{code="502",method="GET",protocol="http",router="get-api-users@etcd",service="users@etcd"} 10
traefik_router_requests_total{code="200",method="GET",protocol="http",router="get-root@etcd",service="monolith@etcd"} 5
# HELP traefik_router_requests_bytes_total Request sizes.
# TYPE traefik_router_requests_bytes_total counter
traefik_router_requests_bytes_total{code="200",method="GET",protocol="http",router="get-api-users@etcd",service="monolith@etcd"} 12345
# HELP traefik_router_request_duration_seconds How long it took.
# TYPE traefik_router_request_duration_seconds histogram
traefik_router_request_duration_seconds_bucket{code="200",method="GET",protocol="http",router="get-api-users@etcd",service="monolith@etcd",le="0.1"} 80
traefik_router_request_duration_seconds_bucket{code="200",method="GET",protocol="http",router="get-api-users@etcd",service="monolith@etcd",le="0.3"} 90
traefik_router_request_duration_seconds_bucket{code="200",method="GET",protocol="http",router="get-api-users@etcd",service="monolith@etcd",le="+Inf"} 90
traefik_router_request_duration_seconds_bucket{code="502",method="GET",protocol="http",router="get-api-users@etcd",service="users@etcd",le="0.1"} 0
traefik_router_request_duration_seconds_bucket{code="502",method="GET",protocol="http",router="get-api-users@etcd",service="users@etcd",le="0.3"} 10
traefik_router_request_duration_seconds_bucket{code="502",method="GET",protocol="http",router="get-api-users@etcd",service="users@etcd",le="+Inf"} 10
traefik_router_request_duration_seconds_sum{code="200",method="GET",protocol="http",router="get-api-users@etcd",service="monolith@etcd"} 3.2
traefik_router_request_duration_seconds_count{code="200",method="GET",protocol="http",router="get-api-users@etcd",service="monolith@etcd"} 90
"""


def test_counts_are_summed_per_router_over_codes_and_services() -> None:
    found = parse_metrics(METRICS)
    assert set(found) == {"get-api-users", "get-root"}
    users = found["get-api-users"]
    assert (users.requests, users.errors) == (100, 10)  # bytes_total is another family
    assert users.buckets == {0.1: 80, 0.3: 100, float("inf"): 100}
    assert found["get-root"].requests == 5 and found["get-root"].buckets == {}


def test_quantiles_interpolate_inside_their_bucket() -> None:
    buckets = {0.1: 80.0, 0.3: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.0625)  # rank 50 of 80 in [0, 0.1]
    assert quantile(0.9, buckets) == pytest.approx(0.2)  # rank 90: half-way through (0.1, 0.3]
    assert quantile(0.5, {}) is None and quantile(0.5, {0.1: 0.0}) is None
    assert quantile(0.99, {0.1: 1.0, float("inf"): 2.0}) == 0.1  # past the last finite bound


def test_figures_between_two_scrapes() -> None:
    old = RouterCounts(40, 0, {0.1: 40, float("inf"): 40})
    new = RouterCounts(100, 10, {0.1: 80, 0.3: 100, float("inf"): 100})
    figures = between(old, new, 30.0)
    assert figures["rps"] == 2.0 and figures["error_pct"] == pytest.approx(16.67)
    assert figures["p50"] == pytest.approx(0.1 * 30 / 40)  # 60 new requests: rank 30 of 40 below 0.1
    assert between(new, old, 10.0)["rps"] == 4.0  # a counter that went down (Traefik restarted)
    assert between(None, RouterCounts(), 1.0) == {"rps": 0.0, "error_pct": None, "p50": None, "p99": None}


def test_requests_per_traefik_service_are_read_too() -> None:
    text = METRICS + (
        "# TYPE traefik_service_requests_total counter\n"
        'traefik_service_requests_total{code="200",method="GET",protocol="http",service="monolith@etcd"} 90\n'
        'traefik_service_requests_total{code="502",method="GET",protocol="http",service="users@etcd"} 10\n'
        'traefik_service_requests_total{code="200",method="GET",protocol="http",service="users@etcd"} 5\n')
    routers, services = parse_all(text)
    assert services == {"monolith": 90, "users": 15}
    assert routers == parse_metrics(text)
