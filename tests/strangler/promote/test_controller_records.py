"""The controller and the CLI facing records in etcd that are not promotions (hand-edited, another
version's, cut short): each is reported once and skipped; the real promotions beside them go on.

One etcd, one Traefik and one controller process for the module.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from routing_helpers import clean_routing, plan_text  # noqa: E402

from strangler.cli import cli  # noqa: E402
from strangler.promote import records  # noqa: E402
from strangler.stack import procs  # noqa: E402

pytestmark = pytest.mark.integration

USER = "GET /api/users/<id>"
MALFORMED = {
    records.PROMOTIONS_PREFIX + "00000011": "{not json",
    records.PROMOTIONS_PREFIX + "00000012": "[1, 2]",
    records.PROMOTIONS_PREFIX + "00000013": json.dumps({"id": 13, "endpoints": [USER]}),
    records.PROMOTIONS_PREFIX + "00000014": json.dumps(
        {"id": 14, "endpoints": [USER], "target": "users", "steps": "5,100", "interval": 1,
         "thresholds": {}, "who": "x"}),
    records.PROMOTIONS_PREFIX + "00000015": json.dumps(
        {"id": 15, "endpoints": [USER], "target": "users", "steps": [5, 100], "interval": 1,
         "thresholds": {}, "who": "x", "log": [{"n": 1}]}),
}
# well-formed, but its saved route is not one: every move of it fails the same way
BROKEN = records.PROMOTIONS_PREFIX + "00000099"
BROKEN_RECORD = json.dumps({"id": 99, "endpoints": ["GET /api/users"], "target": "users", "steps": [5, 100],
                            "interval": 1, "thresholds": {}, "who": "x", "abort": "x",
                            "before": {"GET /api/users": {"endpoint": 5}}})


@pytest.fixture(scope="module")
def world(tmp_path_factory, etcd_server, traefik_server):
    base = tmp_path_factory.mktemp("records")
    plan = base / "strangler.toml"
    plan.write_text(plan_text("incremental"))
    etcd = etcd_server.client()
    clean_routing(etcd)
    for prefix in (records.PROMOTIONS_PREFIX, records.LOCKS_PREFIX):
        etcd.delete_prefix(prefix)
    for key, value in MALFORMED.items():
        etcd.put(key, value)
    etcd.put(BROKEN, BROKEN_RECORD)
    world = {"plan": plan, "etcd": etcd, "etcd_url": etcd_server.url, "api": traefik_server.api_url,
             "log": base / "controller.log"}
    run(world, "plan", "apply")
    argv = [sys.executable, "-m", "strangler.promote", "--etcd", etcd_server.url, "--traefik-metrics",
            traefik_server.api_url, "--shadow-store", str(base / "shadow.sqlite"), "--tick", "0.1"]
    controller = procs.Proc("controller", argv, world["log"]).start()
    world["controller"] = controller
    try:
        yield world
    finally:
        controller.stop()


def run(world, *args, code=0):
    result = CliRunner().invoke(cli, [*args, "--plan", str(world["plan"]), "--etcd", world["etcd_url"],
                                      "--traefik-api", world["api"]])
    if code is not None:
        assert result.exit_code == code, result.output
    return result


def test_the_controller_skips_malformed_records_and_carries_the_others(world) -> None:
    etcd = world["etcd"]
    current = json.loads(run(world, "routes", "--json").stdout)
    before = next(r for r in current if r["endpoint"] == USER)
    assert before["backend"] == "monolith"
    table_before = {r["endpoint"]: r for r in current}
    # a real promotion beside the broken ones, asked to abort: the controller must roll it back
    from router.table import load

    routes, _ = load(etcd)
    route = next(r for e, r in routes.items() if str(e) == USER)
    real = records.create(etcd, lambda i: records.Promotion(
        id=i, endpoints=[USER], target="users", steps=[5, 100], interval=1.0, thresholds={}, who="tester",
        before={USER: route.to_dict()}, abort="tester"))
    assert real.id == 1  # the last-promotion counter was never touched by the broken records

    procs.wait_until(lambda: (records.get(etcd, real.id) or (None,))[0].state == records.ROLLED_BACK,
                     30, "the real promotion rolled back", proc=world["controller"])
    assert world["controller"].alive(), world["log"].read_text()[-2000:]
    procs.wait_until(lambda: world["log"].read_text().count("is not a promotion") >= len(MALFORMED)
                     and "promotion 99: unexpected failure" in world["log"].read_text(),
                     10, "the controller's warnings", proc=world["controller"])
    text = world["log"].read_text()
    # the only traceback is the broken route's (record 99), not a malformed record's
    assert text.count("Traceback") == text.count("promotion 99: unexpected failure") == 1, text[-3000:]
    for key in MALFORMED:
        assert text.count(f"{key} in etcd is not a promotion") == 1, text[-2000:]
    after = {r["endpoint"]: r for r in json.loads(run(world, "routes", "--json").stdout)}
    assert after == table_before  # rolled back to where it was


def test_a_promotion_failing_the_same_way_every_pass_is_logged_once(world) -> None:
    etcd = world["etcd"]
    from router.table import load

    routes, _ = load(etcd)
    route = next(r for e, r in routes.items() if str(e) == USER)
    for _ in range(2):  # each carried to its end takes the controller at least one more pass
        real = records.create(etcd, lambda i: records.Promotion(
            id=i, endpoints=[USER], target="users", steps=[5, 100], interval=1.0, thresholds={},
            who="tester", before={USER: route.to_dict()}, abort="tester"))
        procs.wait_until(lambda: records.get(etcd, real.id)[0].state == records.ROLLED_BACK,  # noqa: B023
                         30, "the real promotion rolled back", proc=world["controller"])
    assert world["controller"].alive()
    text = world["log"].read_text()
    assert text.count("promotion 99: unexpected failure") == 1, text[-3000:]
    assert records.get(etcd, 99)[0].state == records.RUNNING  # left as it is, for a person to look at


def test_promotions_lists_the_real_ones_and_warns_of_the_others_in_one_line_each(world) -> None:
    result = run(world, "promotions", "--json")
    assert [p["id"] for p in json.loads(result.stdout)] == [1, 2, 3, 99]
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == len(MALFORMED)
    assert all(line.startswith("warning: strangler/promotions/0000001") for line in warnings)


def test_a_malformed_lock_or_counter_is_refused_in_one_line(world) -> None:
    etcd = world["etcd"]
    etcd.put(records.lock_key(USER), "garbage")
    try:
        result = run(world, "promote", "--abort", USER, code=2)
        (line,) = result.stderr.strip().splitlines()
        assert "garbage" in line and "Traceback" not in result.output
    finally:
        etcd.delete(records.lock_key(USER))


def test_a_controller_that_lost_its_key_to_another_stops(world, tmp_path) -> None:
    """Frozen past its lease (etcd out of reach, a stopped VM), a controller finds another one
    carrying the promotions when it wakes: it must stop, not carry them alongside it."""
    etcd = world["etcd"]
    first = world["controller"]
    procs.wait_until(lambda: (records.controller_alive(etcd) or {}).get("pid") == first.pid, 20,
                     "the first controller's key", proc=first)
    os.kill(first.pid, signal.SIGSTOP)
    second = None
    try:
        procs.wait_until(lambda: records.controller_alive(etcd) is None, 20, "the frozen controller's lease to expire")
        second = procs.Proc("controller2", first.argv, tmp_path / "controller2.log").start()
        procs.wait_until(lambda: (records.controller_alive(etcd) or {}).get("pid") == second.pid, 20,
                         "the second controller's key", proc=second)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    try:
        procs.wait_until(lambda: not first.alive(), 30, "the first controller to stop")
        assert first.popen.returncode == 1
        assert "lost the controller key" in world["log"].read_text()
        assert second.alive() and records.controller_alive(etcd)["pid"] == second.pid
    finally:
        if second is not None:
            second.stop()
