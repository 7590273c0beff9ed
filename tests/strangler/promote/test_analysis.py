"""The pure half of promotion: option parsing, Prometheus text, windows, quantiles and verdicts."""

from __future__ import annotations

import pytest

from strangler.promote import analysis, metrics
from strangler.promote.analysis import BadPromotion, Figures, Thresholds, verdict

TEXT = """# HELP traefik_service_requests_total How many HTTP requests processed on a service.
# TYPE traefik_service_requests_total counter
traefik_service_requests_total{code="200",method="GET",protocol="http",service="users@etcd"} 90
traefik_service_requests_total{code="500",method="GET",protocol="http",service="users@etcd"} 10
traefik_service_requests_total{code="200",method="POST",protocol="http",service="monolith@etcd"} 5
traefik_service_request_duration_seconds_bucket{code="200",method="GET",protocol="http",service="users@etcd",le="0.01"} 50
traefik_service_request_duration_seconds_bucket{code="200",method="GET",protocol="http",service="users@etcd",le="0.025"} 90
traefik_service_request_duration_seconds_bucket{code="200",method="GET",protocol="http",service="users@etcd",le="+Inf"} 90
traefik_service_request_duration_seconds_bucket{code="500",method="GET",protocol="http",service="users@etcd",le="0.01"} 10
traefik_service_request_duration_seconds_bucket{code="500",method="GET",protocol="http",service="users@etcd",le="0.025"} 10
traefik_service_request_duration_seconds_bucket{code="500",method="GET",protocol="http",service="users@etcd",le="+Inf"} 10
traefik_entrypoint_requests_total{code="200",entrypoint="web",method="GET",protocol="http"} 100
"""


def test_parse_sums_each_service_over_its_other_labels():
    found = metrics.parse(TEXT)
    assert found["users"].codes == {"200": 90.0, "500": 10.0}
    assert found["users"].buckets == {0.01: 60.0, 0.025: 100.0, float("inf"): 100.0}
    assert found["monolith"].codes == {"200": 5.0}
    assert set(found) == {"users", "monolith"}


def test_window_differences_two_scrapes_and_a_restart_is_unknown():
    before = metrics.parse(TEXT)
    after = metrics.merge([before, metrics.parse(TEXT)])  # every counter doubled
    window = metrics.window(before, after, "users")
    assert (window.requests, window.errors, window.error_rate) == (100, 10, 0.1)
    assert metrics.window(after, before, "users") is None
    assert metrics.window(before, before, "nobody").requests == 0


def test_histogram_quantile_interpolates_like_promql():
    buckets = [(0.01, 60.0), (0.025, 100.0), (float("inf"), 100.0)]
    assert metrics.histogram_quantile(0.5, buckets) == pytest.approx(0.01 * 50 / 60)
    assert metrics.histogram_quantile(0.99, buckets) == pytest.approx(0.01 + 0.015 * 39 / 40)
    assert metrics.histogram_quantile(0.99, [(0.01, 0.0), (float("inf"), 0.0)]) is None
    assert metrics.histogram_quantile(0.99, [(0.01, 1.0), (float("inf"), 5.0)]) == 0.01


def test_option_parsing_exactly():
    assert analysis.parse_steps("5,25,50,100") == (5, 25, 50, 100)
    assert analysis.parse_interval("30s") == 30.0 and analysis.parse_interval("1m") == 60.0
    assert analysis.parse_interval("500ms") == 0.5 and analysis.parse_interval("2") == 2.0
    assert analysis.parse_rate("--x", "1%") == 0.01 and analysis.parse_rate("--x", "0.05") == 0.05
    assert analysis.parse_ratio("--x", "1.5") == 1.5


@pytest.mark.parametrize(("parse", "text", "message"), [
    (analysis.parse_steps, "0,200", "from 1 to 100"),
    (analysis.parse_steps, "50,25,100", "must rise"),
    (analysis.parse_steps, "5,25", "must be 100"),
    (analysis.parse_steps, "five", "whole percentages"),
    (analysis.parse_interval, "-1", "duration"),
    (analysis.parse_interval, "0.1s", "between 0.5s and 1h"),
    (lambda t: analysis.parse_rate("--max-error-rate", t), "150%", "from 0% to 100%"),
    (lambda t: analysis.parse_rate("--max-error-rate", t), "nan", "from 0% to 100%"),
    (lambda t: analysis.parse_ratio("--max-latency-ratio", t), "0.5", "from 1 to 1000"),
])
def test_bad_options_name_what_to_write(parse, text, message):
    with pytest.raises(BadPromotion, match=message):
        parse(text)


LIMITS = Thresholds(max_error_rate=0.01, max_latency_ratio=1.5, max_diff_rate=0.01, min_requests=20)


@pytest.mark.parametrize(("fig", "outcome", "why"), [
    (Figures(19, 0, 0.01, 100, 0.01), "wait", "not enough data: 19 of 20"),
    (Figures(100, 1, 0.01, 100, 0.01), "pass", "within every threshold"),
    (Figures(100, 2, 0.01, 100, 0.01), "fail", "error rate 2.0% > 1.0%"),
    (Figures(100, 0, 0.016, 100, 0.01), "fail", "p99 1.60x"),
    (Figures(100, 0, 0.015, 100, 0.01), "pass", "within"),
    (Figures(100, 0, 0.004, 100, 0.001), "pass", "within"),  # both under the 5 ms floor
    (Figures(100, 0, 0.05, 10, 0.01), "pass", "within"),  # too few current answers to compare
    (Figures(100, 0, 0.01, 100, 0.01, compared=40, differing=2, shadowed=True), "fail", "diff rate 5.0%"),
    (Figures(5, 0, 0.01, 100, 0.01, compared=40, differing=2, shadowed=True), "fail", "diff rate"),
    (Figures(100, 0, 0.01, 100, 0.01, compared=10, differing=5, shadowed=True), "pass", "within"),
])
def test_verdict_on_exact_figures(fig, outcome, why):
    got, reason = verdict(fig, LIMITS)
    assert got == outcome and why in reason


def test_whole_flips_ignore_latency_and_figures_read_well():
    slow = Figures(100, 0, 0.1, 100, 0.01)
    assert verdict(slow, LIMITS, whole=True)[0] == "pass"
    assert slow.line() == "100 req, 0.0% 5xx, p99 100 ms vs 10 ms (10.00x)"
    assert Figures(0, 0, None, 0, None).line() == "0 req, - 5xx, p99 - vs -"


def test_a_promotions_log_is_numbered_and_bounded():
    from strangler.promote.records import KEEP_LINES, Promotion

    promotion = Promotion(id=1, endpoints=["GET /x"], target="users", steps=[5, 100], interval=1.0,
                          thresholds={}, who="me")
    for i in range(KEEP_LINES + 5):
        promotion.note(f"line {i}")
    assert len(promotion.log) == KEEP_LINES
    assert promotion.log[0]["n"] == 6 and promotion.log[-1]["n"] == KEEP_LINES + 5
    assert Promotion.from_json(promotion.to_json()) == promotion
