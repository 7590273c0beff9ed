"""router.table against a real etcd: atomic changes, history, rollback."""

import threading
from dataclasses import replace

import pytest

from router import table
from router.etcd import Etcd, Put
from router.keys import (
    LAST_CHANGE_KEY,
    Route,
    is_server_key,
    parse_endpoint,
    state_key,
    traefik_keys,
)
from router.table import ConcurrentChange, RollbackRefused, TableTooLarge

pytestmark = pytest.mark.integration

ENDPOINTS = ["GET /api/users", "GET /api/users/<int:id>", "POST /api/users", "POST /api/tokens"]
USERS = parse_endpoint("GET /api/users/<id>")
LIST = parse_endpoint("GET /api/users")
ROUTER = "traefik/http/routers/get-api-users-id/"


def flip(endpoint, backend):
    def change(routes):
        routes[endpoint] = Route(endpoint, backend)
        return routes

    return change


def traefik(kv):
    return kv.get_prefix("traefik/")[0]


@pytest.fixture
def ready(kv):
    table.initialise(kv, ENDPOINTS, healthchecks={"users": "/health"}, who="t@h")
    return kv


def test_initialise_puts_everything_on_the_monolith_with_catch_all(ready):
    routes, _ = table.load(ready)
    assert set(routes) == {parse_endpoint(s) for s in ENDPOINTS}
    assert {r.state for r in routes.values()} == {"monolith"}
    assert traefik(ready) == traefik_keys(routes.values(), healthchecks={"users": "/health"})
    assert traefik(ready)["traefik/http/routers/catchall/service"] == "monolith"


def test_initialise_is_idempotent_and_keeps_flips(ready):
    table.apply(ready, flip(USERS, "users"), who="t@h", what="flip")
    before = ready.revision()
    again = table.initialise(ready, ENDPOINTS, healthchecks={"users": "/health"}, who="t@h")
    assert again is None
    assert ready.revision() == before
    assert table.load(ready)[0][USERS].backend == "users"


def test_initialise_adds_new_endpoints_only(ready):
    change = table.initialise(
        ready, [*ENDPOINTS, "DELETE /api/users/<id>"], healthchecks={"users": "/health"}
    )
    assert list(change.after) == ["DELETE /api/users/<id>"]
    assert change.before == {"DELETE /api/users/<id>": None}


def test_apply_writes_state_and_traefik_keys_together(ready):
    change = table.apply(ready, flip(USERS, "users"), who="ann@box", what="flip users")
    assert change.id == 2
    assert change.endpoints == ["GET /api/users/<id>"]
    assert change.before["GET /api/users/<id>"].backend == "monolith"
    assert change.after["GET /api/users/<id>"].backend == "users"
    assert ready.get(ROUTER + "service") == "users"
    assert Route.from_json(ready.get(state_key(USERS))).backend == "users"
    # Everything of the change carries the same revision: one transaction.
    assert ready.get_entry(ROUTER + "service").mod_revision == change.revision
    assert ready.get_entry(state_key(USERS)).mod_revision == change.revision
    assert ready.get_entry(LAST_CHANGE_KEY).mod_revision == change.revision


def test_unchanged_keys_are_not_rewritten(ready):
    untouched = ready.get_prefix_entries("traefik/http/routers/post-api-users/")[0]
    rule_before = ready.get_entry(ROUTER + "rule")
    table.apply(ready, flip(USERS, "users"), who="t@h", what="flip")
    assert ready.get_prefix_entries("traefik/http/routers/post-api-users/")[0] == untouched
    assert ready.get_entry(ROUTER + "rule") == rule_before


def test_canary_then_flip_removes_the_weighted_service(ready):
    def canary(routes):
        routes[USERS] = Route(USERS, weights={"users": 10, "monolith": 90})
        return routes

    table.apply(ready, canary, who="t@h", what="canary")
    assert ready.get(ROUTER + "service") == "get-api-users-id-canary"
    assert ready.get_prefix("traefik/http/services/get-api-users-id-canary/")[0]
    table.apply(ready, flip(USERS, "users"), who="t@h", what="flip")
    assert ready.get_prefix("traefik/http/services/get-api-users-id-canary/")[0] == {}
    assert ready.get(ROUTER + "service") == "users"


def test_instance_servers_and_foreign_keys_are_left_alone(ready):
    server = "traefik/http/services/users/loadbalancer/servers/inst-1/url"
    lease = ready.lease(30)
    ready.txn([], [Put(server, "http://127.0.0.1:9999", lease.id)])
    ready.put("traefik/http/routers/dashboard/rule", "PathPrefix(`/dash`)")
    table.apply(ready, flip(USERS, "users"), who="t@h", what="flip")
    table.apply(ready, flip(USERS, "monolith"), who="t@h", what="back")
    assert ready.get(server) == "http://127.0.0.1:9999"
    assert ready.get("traefik/http/routers/dashboard/rule") == "PathPrefix(`/dash`)"
    lease.revoke()


def test_removing_an_endpoint_deletes_its_keys_but_never_the_catch_all(ready):
    change = table.apply(ready, {}, who="t@h", what="empty the table")
    assert set(change.endpoints) == {str(parse_endpoint(s)) for s in ENDPOINTS}
    keys = traefik(ready)
    assert not [k for k in keys if "/routers/" in k and "/catchall/" not in k]
    assert keys["traefik/http/routers/catchall/rule"] == "PathPrefix(`/`)"
    assert ready.get_prefix("strangler/routes/")[0] == {}


def test_a_flip_repairs_the_keys_it_touches_and_reads_no_others(ready):
    ready.put(ROUTER + "service", "tampered")
    ready.put(ROUTER + "priority", "7")
    table.apply(ready, flip(LIST, "users"), who="t@h", what="flip list")
    assert ready.get(ROUTER + "service") == "tampered"  # another endpoint's: not read, not written
    table.apply(ready, flip(USERS, "users"), who="t@h", what="flip one")
    assert ready.get(ROUTER + "service") == "users"
    assert ready.get(ROUTER + "priority") != "7"


def test_a_change_of_some_endpoints_reads_their_routes_only_and_writes_the_same(ready):
    seen = []

    def canary(routes):
        seen.append(set(routes))
        return {**routes, LIST: Route(LIST, "monolith", {"users": 10, "monolith": 90})}

    table.apply(ready, flip(USERS, "users"), who="t@h", what="flip", only=[USERS])
    table.apply(ready, canary, who="t@h", what="canary", only=[LIST])
    assert seen == [{LIST}]
    routes, _ = table.load(ready)
    assert routes[USERS].backend == "users" and routes[LIST].weights == {"users": 10, "monolith": 90}
    wanted = table.load_options(ready).derive(routes.values())
    assert {k: v for k, v in traefik(ready).items() if not is_server_key(k)} == wanted
    with pytest.raises(ValueError, match="not given"):
        table.apply(ready, flip(USERS, "monolith"), who="t@h", what="stray", only=[LIST])
    assert table.load(ready)[0][USERS].backend == "users"


def test_applying_options_repairs_drifted_traefik_keys_everywhere(ready):
    ready.put(ROUTER + "service", "tampered")
    options = table.load_options(ready)
    table.apply(ready, flip(LIST, "users"), who="t@h", what="flip list",
                options=replace(options, healthchecks={"users": "/health", "monolith": "/healthz"}))
    assert ready.get(ROUTER + "service") == "monolith"


def test_a_flip_writes_what_a_whole_table_derivation_would(ready):
    table.apply(ready, flip(USERS, "users"), who="t@h", what="flip")
    table.apply(ready, lambda routes: {**routes, LIST: Route(LIST, "monolith", {"users": 10, "monolith": 90})},
                who="t@h", what="canary")
    table.apply(ready, lambda routes: {**routes, LIST: Route(LIST, "monolith", mirror="cmp")},
                who="t@h", what="shadow")
    routes, _ = table.load(ready)
    wanted = table.load_options(ready).derive(routes.values())
    assert {k: v for k, v in traefik(ready).items() if k in wanted or not is_server_key(k)} == wanted


def test_noop_change_writes_nothing(ready):
    before = ready.revision()
    assert table.apply(ready, lambda routes: routes, who="t@h", what="nothing") is None
    assert ready.revision() == before


def test_concurrent_appliers_one_wins_and_the_loser_writes_nothing(ready, kv_url):
    inside, go_on = threading.Event(), threading.Event()
    results = {}

    def slow_flip(routes):
        inside.set()  # has read the table; now let the other one win
        go_on.wait(10)
        routes[LIST] = replace(routes[LIST], backend="users")
        return routes

    def loser():
        try:
            results["loser"] = table.apply(Etcd(kv_url), slow_flip, who="b@h", what="slow")
        except ConcurrentChange as exc:
            results["loser"] = exc

    thread = threading.Thread(target=loser)
    thread.start()
    assert inside.wait(10)
    winner = table.apply(ready, flip(USERS, "users"), who="a@h", what="fast")
    go_on.set()
    thread.join(10)

    assert isinstance(results["loser"], ConcurrentChange)
    assert str(results["loser"]) == "routing was changed by someone else; re-run the command"
    routes, _ = table.load(ready)
    assert routes[LIST].backend == "monolith"
    assert ready.get("traefik/http/routers/get-api-users/service") == "monolith"
    assert [c.what for c in table.history(ready)][-1] == "fast"
    assert winner.id == table.history(ready)[-1].id


def test_history_records_each_change(ready):
    table.apply(ready, flip(USERS, "users"), who="ann@box", what="flip users")
    table.apply(ready, flip(LIST, "users"), who="bob@box", what="flip list")
    changes = table.history(ready)
    assert [c.id for c in changes] == [1, 2, 3]
    assert [c.who for c in changes] == ["t@h", "ann@box", "bob@box"]
    assert changes[2].what == "flip list"
    assert changes[2].before == {"GET /api/users": Route(LIST)}
    assert changes[2].after == {"GET /api/users": Route(LIST, "users")}
    assert changes[1].revision < changes[2].revision
    assert ready.get_entry(LAST_CHANGE_KEY).mod_revision == changes[2].revision
    assert changes[2].time.endswith("+00:00")


def test_history_revision_shows_the_table_as_it_was(ready):
    table.apply(ready, flip(USERS, "users"), who="t@h", what="flip")
    table.apply(ready, flip(USERS, "monolith"), who="t@h", what="back")
    first_flip = table.history(ready)[1]
    past = ready.get_prefix_at("strangler/routes/", first_flip.revision)
    assert Route.from_json(past[state_key(USERS)]).backend == "users"


def test_rollback_restores_the_last_change(ready):
    table.apply(ready, flip(USERS, "users"), who="t@h", what="flip users")
    undo = table.rollback(ready, who="t@h")
    assert undo.rollback_of == 2
    assert undo.who == "t@h"
    assert "roll back change 2" in undo.what
    assert table.load(ready)[0][USERS].backend == "monolith"
    assert ready.get(ROUTER + "service") == "monolith"
    assert table.history(ready)[-1].id == undo.id == 3


def test_rollback_without_an_id_undoes_the_callers_own_latest_change(ready):
    mine = table.apply(ready, flip(USERS, "users"), who="alice@h", what="alice's")
    table.apply(ready, flip(LIST, "users"), who="bob@h", what="bob's")
    undo = table.rollback(ready, who="alice@h")
    assert undo.rollback_of == mine.id and undo.who == "alice@h"
    routes, _ = table.load(ready)
    assert routes[USERS].backend == "monolith" and routes[LIST].backend == "users"


def test_someone_elses_change_needs_its_id_or_anyone(ready):
    bobs = table.apply(ready, flip(LIST, "users"), who="bob@h", what="bob's")
    before = ready.revision()
    with pytest.raises(RollbackRefused) as raised:
        table.rollback(ready, who="carol@h")
    message = str(raised.value)
    assert message.startswith("carol@h has no routing change in effect")
    assert f"change {bobs.id} by bob@h (bob's)" in message and f"strangler rollback {bobs.id}" in message
    assert ready.revision() == before
    assert table.rollback(ready, who="carol@h", anyone=True).rollback_of == bobs.id


def test_a_check_refuses_the_undo_unless_forced(ready):
    first = table.apply(ready, flip(USERS, "users"), who="t@h", what="users")

    def no(change):
        raise RuntimeError(f"not {change.id}")

    before = ready.revision()
    with pytest.raises(RuntimeError, match=f"not {first.id}"):
        table.rollback(ready, who="t@h", check=no)
    assert ready.revision() == before
    assert table.rollback(ready, who="t@h", check=no, force=True).rollback_of == first.id


def test_repeated_rollbacks_walk_back_through_history(ready):
    table.apply(ready, flip(USERS, "users"), who="t@h", what="users")
    table.apply(ready, flip(USERS, "users2"), who="t@h", what="users2")
    table.rollback(ready, who="t@h")
    assert table.load(ready)[0][USERS].backend == "users"
    table.rollback(ready, who="t@h")
    assert table.load(ready)[0][USERS].backend == "monolith"
    assert [c.rollback_of for c in table.history(ready)][-2:] == [3, 2]


def test_rolling_back_a_rollback_redoes_the_change(ready):
    table.apply(ready, flip(USERS, "users"), who="t@h", what="users")
    undo = table.rollback(ready, who="t@h")
    table.rollback(ready, undo.id, who="t@h")
    assert table.load(ready)[0][USERS].backend == "users"
    # Redo and undo cancel out, so the latest change in effect is the flip.
    assert table.rollback(ready, who="t@h").rollback_of == 2
    assert table.load(ready)[0][USERS].backend == "monolith"


def test_rolling_back_a_change_already_undone_is_refused(ready):
    first = table.apply(ready, flip(USERS, "users"), who="t@h", what="users")
    table.rollback(ready, who="t@h")
    with pytest.raises(RollbackRefused) as raised:
        table.rollback(ready, first.id, who="t@h")
    assert "already" in str(raised.value)


def test_cancelled_pairs_rollbacks_with_their_targets():
    def change(id_, rollback_of=None):
        return table.Change(id_, "t", "w", "x", 0, {}, {}, rollback_of)

    assert table.cancelled([change(1), change(2), change(3, 2)]) == {2, 3}
    # 4 undoes the undo: change 2 is in effect again, 3 and 4 cancel out.
    assert table.cancelled([change(1), change(2), change(3, 2), change(4, 3)]) == {3, 4}


def test_rollback_of_an_earlier_change_that_nobody_touched_since(ready):
    flip_users = table.apply(ready, flip(USERS, "users"), who="t@h", what="users")
    table.apply(ready, flip(LIST, "users"), who="t@h", what="list")
    table.rollback(ready, flip_users.id, who="t@h")
    routes, _ = table.load(ready)
    assert routes[USERS].backend == "monolith"
    assert routes[LIST].backend == "users"


def test_rollback_refuses_when_a_later_change_touched_the_same_endpoint(ready):
    first = table.apply(ready, flip(USERS, "users"), who="t@h", what="users")
    table.apply(ready, flip(USERS, "users2"), who="t@h", what="users2")
    with pytest.raises(RollbackRefused) as raised:
        table.rollback(ready, first.id, who="t@h")
    message = str(raised.value)
    assert "change 3 (users2)" in message and "\n" not in message
    assert table.load(ready)[0][USERS].backend == "users2"
    forced = table.rollback(ready, first.id, who="t@h", force=True)
    assert forced.rollback_of == first.id
    assert table.load(ready)[0][USERS].backend == "monolith"


def test_rollback_of_initialise_removes_the_endpoints_it_added(kv):
    table.initialise(kv, ["GET /x"], who="t@h")
    table.rollback(kv, who="t@h")
    assert table.load(kv)[0] == {}
    assert kv.get("traefik/http/routers/catchall/rule") == "PathPrefix(`/`)"


def test_rollback_with_nothing_or_unknown_id_is_refused(kv):
    with pytest.raises(RollbackRefused):
        table.rollback(kv, who="t@h")
    table.initialise(kv, ["GET /x"], who="t@h")
    with pytest.raises(RollbackRefused) as raised:
        table.rollback(kv, 42, who="t@h")
    assert "no change 42" in str(raised.value)


def test_big_bang_flip_of_many_endpoints_is_one_transaction(kv):
    specs = [f"GET /api/r{i}/<id>" for i in range(300)]
    table.initialise(kv, specs, who="t@h")

    def flip_all(routes):
        return {e: replace(r, backend="svc") for e, r in routes.items()}

    change = table.apply(kv, flip_all, who="t@h", what="big bang")
    assert len(change.endpoints) == 300
    services = kv.get_prefix("traefik/http/routers/")[0]
    flipped = [k for k, v in services.items() if k.endswith("/service") and v == "svc"]
    assert len(flipped) == 300
    assert {kv.get_entry(k).mod_revision for k in flipped} == {change.revision}


def test_too_large_change_says_how_to_fix_it(etcd_factory):
    small = Etcd.connect(etcd_factory(max_txn_ops=None))  # etcd's default: 128
    with pytest.raises(TableTooLarge) as raised:
        table.initialise(small, [f"GET /r{i}" for i in range(100)], who="t@h")
    assert "--max-txn-ops" in str(raised.value)
    assert small.get_prefix("strangler/")[0] == {}


def test_who_is_user_at_host():
    user, _, host = table.who().partition("@")
    assert user and host


def test_a_note_is_recorded_with_its_keys_and_a_default_rollback_skips_it(ready):
    flipped = table.apply(ready, flip(USERS, "users"), who="t@h", what="users")
    noted = table.note(ready, who="t@h", what="upgrade users try: release v2", puts={"strangler/x": "1"})
    assert noted.id == flipped.id + 1 and noted.endpoints == []
    assert ready.get("strangler/x") == "1"
    assert [c.what for c in table.history(ready)][-1] == "upgrade users try: release v2"
    undone = table.rollback(ready, who="t@h")  # the flip, not the note
    assert undone.rollback_of == flipped.id
    assert table.load(ready)[0][USERS].backend == "monolith"
