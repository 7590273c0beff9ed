"""The comparator's /_shadow/metrics: open without the mirror secret, flushed and pending counts summed."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from strangler.compare.diff import Difference
from strangler.shadow import create_app
from strangler.shadow.store import ShadowStore
from strangler.shadow.worker import Comparator, StaticDirectory


def test_metrics_sum_what_is_flushed_and_what_is_pending(tmp_path: Path) -> None:
    store = ShadowStore(tmp_path / "shadow.sqlite")
    comparator = Comparator(StaticDirectory({}, {}, secret="s"), store)
    found = [Difference("nickname", "nickname", "changed", "a", "b")]
    store.comparison("GET /api/users/<id>", "users", found, {"request": {}})
    store.count("GET /api/users/<id>", "seen", 3)
    store.flush()
    store.count("GET /api/users/<id>", "seen", 2)  # not flushed yet
    store.count("GET /api/users/<id>", "dropped")
    client = create_app(comparator=comparator).test_client()

    answer = client.get("/_shadow/metrics")  # no mirror secret: still answered
    assert answer.status_code == 200
    samples = {(s.name, s.labels.get("endpoint")): s for family in
               text_string_to_metric_families(answer.get_data(as_text=True)) for s in family.samples}
    endpoint = "GET /api/users/<id>"
    assert samples[("strangler_comparator_seen_total", endpoint)].value == 5
    assert samples[("strangler_comparator_compared_total", endpoint)].value == 1
    assert samples[("strangler_comparator_differing_total", endpoint)].value == 1
    assert samples[("strangler_comparator_dropped_total", endpoint)].value == 1
    assert samples[("strangler_comparator_seen_total", endpoint)].labels["candidate"] == "users"
    assert samples[("strangler_comparator_queue_length", None)].value == 0
    assert client.get("/_shadow/stats").status_code == 403  # the rest still needs the secret
