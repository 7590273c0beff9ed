"""router.keys: pure key layout, rules and priorities."""

import re

import pytest

from router.keys import (
    MONOLITH,
    Endpoint,
    Match,
    Route,
    ShadowSpec,
    history_key,
    is_server_key,
    live_spec,
    parse_endpoint,
    priority,
    rule,
    state_key,
    traefik_keys,
)

R = "traefik/http/routers/"
S = "traefik/http/services/"


def ep(spec: str) -> Endpoint:
    return parse_endpoint(spec)


def test_parse_endpoint_drops_converters():
    assert ep("GET /api/users/<int:id>") == Endpoint("GET", "/api/users/<id>")
    assert ep("get /api/users/<id>") == Endpoint("GET", "/api/users/<id>")
    assert ep("DELETE /a/<any(x, y):kind>") == Endpoint("DELETE", "/a/<kind>")


def test_parse_endpoint_keeps_path_converter_and_trailing_slash():
    assert ep("GET /static/<path:filename>").path == "/static/<path:filename>"
    assert ep("GET /api/users/").path == "/api/users/"
    assert ep("GET /").path == "/"


@pytest.mark.parametrize(
    "spec, bad",
    [
        ("GET", "'GET'"),
        ("GET /a extra", "'a extra'"),
        ("FETCH /a", "'FETCH'"),
        ("GET api/users", "'api/users'"),
        ("GET /a//b", "'/a//b'"),
        ("GET /a/<id", "'<id'"),
        ("GET /a/x`y", "'x`y'"),
        ("GET /a/<int:>", "'<int:>'"),
    ],
)
def test_parse_endpoint_errors_name_the_bad_value(spec, bad):
    with pytest.raises(ValueError) as raised:
        parse_endpoint(spec)
    assert bad in str(raised.value)


def test_slugs_are_readable_and_stable():
    assert ep("GET /api/users/<int:id>").id == "get-api-users-id"
    assert ep("POST /api/tokens").id == "post-api-tokens"
    assert ep("GET /").id == "get-root"
    assert ep("GET /static/<path:f>").id == "get-static-f"
    assert ep("PUT /api/Users_x/<id>").id == "put-api-users-x-id"
    assert re.fullmatch(r"[a-z0-9-]+", ep("GET /a.b/~c/<x>").id)


def test_str_round_trips():
    for spec in ["GET /api/users/<id>", "POST /api/users", "GET /s/<path:p>"]:
        assert parse_endpoint(str(ep(spec))) == ep(spec)


def test_rule_static_path_and_head_follows_get():
    assert rule(ep("GET /api/users")) == "(Method(`GET`) || Method(`HEAD`)) && Path(`/api/users`)"
    assert rule(ep("POST /api/users")) == "Method(`POST`) && Path(`/api/users`)"
    assert rule(ep("HEAD /x")) == "Method(`HEAD`) && Path(`/x`)"


def test_rule_template_uses_anchored_regexp():
    assert rule(ep("PUT /api/users/<int:id>")) == (
        "Method(`PUT`) && PathRegexp(`^/api/users/[^/]+$`)"
    )
    assert rule(ep("GET /static/<path:f>")).endswith("PathRegexp(`^/static/.+$`)")


def test_rule_escapes_regex_metacharacters_in_static_segments():
    text = rule(ep("GET /v1.0/a+b/<id>"))
    regex = re.search(r"PathRegexp\(`(.*)`\)", text).group(1)
    assert regex == r"^/v1\.0/a\+b/[^/]+$"
    assert re.match(regex, "/v1.0/a+b/7")
    assert not re.match(regex, "/v1x0/aab/7")
    assert not re.match(regex, "/v1.0/a+b/7/more")


@pytest.mark.parametrize(
    "url, specific, general",
    [
        ("/api/users/me", "GET /api/users/me", "GET /api/users/<id>"),
        ("/api/users/7", "GET /api/users/<id>", "GET /api/<kind>/<id>"),
        ("/api/users/7/messages", "GET /api/users/<id>/messages", "GET /api/<a>/<b>/<c>"),
        ("/static/a", "GET /static/<f>", "GET /static/<path:f>"),
        ("/static/a/b", "GET /static/<path:f>", "GET /<path:p>"),
        ("/api/users/me", "GET /api/users/<id>", "GET /api/<path:rest>"),
    ],
)
def test_specific_templates_beat_general_ones(url, specific, general):
    for spec in (specific, general):  # both really compete for the URL
        regex = re.search(r"Path(?:Regexp)?\(`(.*)`\)", rule(ep(spec))).group(1)
        assert re.match(regex if regex.startswith("^") else re.escape(regex) + "$", url)
    assert priority(ep(specific)) > priority(ep(general))


def test_priorities_are_above_the_catch_all():
    for spec in ["GET /", "GET /<path:p>", "GET /<a>", "OPTIONS /x"]:
        assert priority(ep(spec)) > 1


def test_explicit_head_outranks_get_of_same_path():
    assert priority(ep("HEAD /a/<id>")) > priority(ep("GET /a/<id>"))


def test_longer_static_text_wins_a_tie():
    assert priority(ep("GET /api/users/<id>")) > priority(ep("GET /api/me/<id>"))


def test_route_state():
    e = ep("GET /api/users")
    assert Route(e).state == "monolith"
    assert Route(e, "users").state == "flipped"
    assert Route(e, weights={"users": 10, "monolith": 90}).state == "canary"
    assert Route(e, mirror="comparator").state == "shadow"


def test_route_json_round_trip():
    route = Route(ep("POST /api/users/<int:id>"), weights={"users": 5, "monolith": 95})
    assert Route.from_json(route.to_json()) == route
    assert '"endpoint": "POST /api/users/<id>"' in route.to_json()
    share = Route(ep("GET /api/users"), mirror="comparator", candidate="users", mirror_percent=25)
    assert Route.from_json(share.to_json()) == share and share.to_dict()["mirror_percent"] == 25
    # a whole shadow, and a route without one, are stored as before the share existed
    assert "mirror_percent" not in Route(ep("GET /a"), mirror="comparator").to_dict()
    assert Route(ep("GET /a"), mirror_percent=25) == Route(ep("GET /a"))


@pytest.mark.parametrize(
    "kwargs", [{"backend": "Bad Name"}, {"weights": {}}, {"weights": {"a": 0}}, {"mirror": "x/y"},
               {"mirror": "comparator", "mirror_percent": 0}, {"mirror": "comparator", "mirror_percent": 101},
               {"mirror": "comparator", "mirror_percent": "50"}, {"mirror": "comparator", "mirror_percent": True}]
)
def test_route_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        Route(ep("GET /a"), **kwargs)


def test_state_and_history_keys():
    assert state_key(ep("GET /api/users/<id>")) == "strangler/routes/get-api-users-id"
    assert history_key(7) == "strangler/history/00000007"
    assert history_key(10) > history_key(9)


def test_empty_table_has_catch_all_retry_and_monolith_service():
    assert traefik_keys([]) == {
        R + "catchall/rule": "PathPrefix(`/`)",
        R + "catchall/priority": "1",
        R + "catchall/service": "monolith",
        R + "catchall/entryPoints/0": "web",
        "traefik/http/middlewares/retry/retry/attempts": "5",
        "traefik/http/middlewares/retry/retry/initialInterval": "100ms",
        # a 502 means the instance died holding the request: retry it elsewhere
        "traefik/http/middlewares/retry/retry/status/0": "502",
        S + "monolith/loadbalancer/passhostheader": "true",
    }


def test_monolith_and_flipped_routers():
    keys = traefik_keys([Route(ep("GET /api/users/<id>")), Route(ep("POST /api/users"), "users")])
    assert {k: v for k, v in keys.items() if k.startswith(R + "get-api-users-id/")} == {
        R + "get-api-users-id/rule": rule(ep("GET /api/users/<id>")),
        R + "get-api-users-id/priority": str(priority(ep("GET /api/users/<id>"))),
        R + "get-api-users-id/service": "monolith",
        R + "get-api-users-id/entryPoints/0": "web",
        R + "get-api-users-id/middlewares/0": "retry",
    }
    assert keys[R + "post-api-users/service"] == "users"
    assert R + "post-api-users/middlewares/0" not in keys  # POST is not retried
    assert keys[S + "users/loadbalancer/passhostheader"] == "true"


def test_canary_builds_a_weighted_service():
    keys = traefik_keys([Route(ep("GET /a"), weights={"users": 10, "monolith": 90})])
    assert keys[R + "get-a/service"] == "get-a-canary"
    weighted = {k: v for k, v in keys.items() if k.startswith(S + "get-a-canary/")}
    assert weighted == {
        S + "get-a-canary/weighted/services/0/name": "monolith",
        S + "get-a-canary/weighted/services/0/weight": "90",
        S + "get-a-canary/weighted/services/1/name": "users",
        S + "get-a-canary/weighted/services/1/weight": "10",
    }


def test_shadow_builds_a_mirroring_service():
    keys = traefik_keys([Route(ep("GET /a"), mirror="comparator")])
    assert keys[R + "get-a/service"] == "get-a-shadow"
    assert {k: v for k, v in keys.items() if k.startswith(S + "get-a-shadow/")} == {
        S + "get-a-shadow/mirroring/service": "monolith",
        S + "get-a-shadow/mirroring/mirrors/0/name": "comparator",
        S + "get-a-shadow/mirroring/mirrors/0/percent": "100",
        S + "get-a-shadow/mirroring/maxBodySize": "1048576",  # a larger body is not copied
    }
    assert keys[S + "comparator/loadbalancer/passhostheader"] == "true"
    assert not any("mirror-mark" in k or "mirror-mark" in v for k, v in keys.items())


def test_a_mirror_secret_marks_the_shadowed_routers_copies_only():
    routes = [Route(ep("GET /a"), mirror="comparator"), Route(ep("GET /b")), Route(ep("POST /c"), mirror="cmp")]
    keys = traefik_keys(routes, mirror_secret="s3cret")
    header = "traefik/http/middlewares/mirror-mark/headers/customRequestHeaders/X-Strangler-Mirror"
    assert keys[header] == "s3cret"
    assert {k: v for k, v in keys.items() if "/middlewares/" in k and k.startswith(R)} == {
        R + "get-a/middlewares/0": "mirror-mark",
        R + "get-a/middlewares/1": "retry",
        R + "get-b/middlewares/0": "retry",
        R + "post-c/middlewares/0": "mirror-mark",
    }


def test_shadowed_canary_mirrors_the_weighted_service():
    keys = traefik_keys([Route(ep("GET /a"), weights={"users": 1, "monolith": 1}, mirror="cmp")])
    assert keys[R + "get-a/service"] == "get-a-shadow"
    assert keys[S + "get-a-shadow/mirroring/service"] == "get-a-canary"


def test_options_rename_monolith_and_entrypoint_and_add_healthchecks():
    keys = traefik_keys(
        [Route(ep("GET /a"))], monolith="flack", entrypoint="http", healthchecks={"users": "/hc"}
    )
    assert keys[R + "catchall/service"] == "flack"
    assert keys[R + "get-a/service"] == "flack"
    assert keys[R + "get-a/entryPoints/0"] == "http"
    assert keys[S + "users/loadbalancer/healthcheck/path"] == "/hc"
    assert keys[S + "users/loadbalancer/healthcheck/interval"] == "2s"
    assert keys[S + "users/loadbalancer/healthcheck/timeout"] == "1s"
    # no passive health check: Traefik's counts a backend's own 5xx (a clean 503) against it
    assert not any("passivehealthcheck" in k for k in keys)
    assert not any("monolith" in k for k in keys)


def test_no_server_keys_are_derived():
    keys = traefik_keys([Route(ep("GET /a"), "users")], healthchecks={"users": "/hc"})
    assert not any(is_server_key(k) for k in keys)
    assert is_server_key("traefik/http/services/users/loadbalancer/servers/i-1/url")


def test_clashing_slugs_are_refused_naming_both():
    with pytest.raises(ValueError) as raised:
        traefik_keys([Route(ep("GET /a_b")), Route(ep("GET /a-b"))])
    assert "GET /a_b" in str(raised.value) and "GET /a-b" in str(raised.value)


def test_keys_do_not_depend_on_route_order():
    routes = [Route(ep("GET /b"), "users"), Route(ep("GET /a"), weights={"x": 1, "y": 2})]
    assert list(traefik_keys(routes).items()) == list(traefik_keys(routes[::-1]).items())


def test_prefix_endpoint_parses_and_slugs():
    prefix = ep("PREFIX /socket.io/")
    assert prefix == Endpoint("PREFIX", "/socket.io/") and prefix.is_prefix
    assert not ep("GET /socket.io/").is_prefix
    assert prefix.id == "prefix-socket-io"
    assert ep("prefix /static/") == Endpoint("PREFIX", "/static/")
    assert parse_endpoint(str(prefix)) == prefix


@pytest.mark.parametrize(
    "spec, bad", [("PREFIX /socket.io", "ends with /"), ("PREFIX /a/<id>/", "<id>")]
)
def test_malformed_prefix_is_refused(spec, bad):
    with pytest.raises(ValueError) as raised:
        parse_endpoint(spec)
    assert bad in str(raised.value)


def test_prefix_rule_matches_every_method_below_it():
    assert rule(ep("PREFIX /socket.io/")) == "PathPrefix(`/socket.io/`)"


def test_prefix_priority_between_catch_all_and_every_exact_endpoint():
    lowest_exact = min(
        priority(ep(s)) for s in ["GET /<path:p>", "GET /<a>/<path:b>", "DELETE /<a>", "GET /"]
    )
    for spec in ["PREFIX /", "PREFIX /static/", "PREFIX /" + "x/" * 3000]:
        assert 1 < priority(ep(spec)) < lowest_exact
    assert priority(ep("PREFIX /static/img/")) > priority(ep("PREFIX /static/"))


def test_prefix_router_keys_have_no_retry():
    keys = traefik_keys([Route(ep("PREFIX /socket.io/"), "socketio")])
    assert keys[R + "prefix-socket-io/rule"] == "PathPrefix(`/socket.io/`)"
    assert keys[R + "prefix-socket-io/service"] == "socketio"
    assert keys[R + "prefix-socket-io/priority"] == str(priority(ep("PREFIX /socket.io/")))
    assert R + "prefix-socket-io/middlewares/0" not in keys


def test_prefix_route_json_round_trip():
    route = Route(ep("PREFIX /static/"), "ui")
    assert Route.from_json(route.to_json()) == route


@pytest.mark.parametrize("spec", ["get /x", "GET  /x", " GET /x", "GET /x ", "Prefix /s/"])
def test_strict_parse_wants_the_file_spelling(spec):
    assert parse_endpoint(spec)  # forgiving for people
    with pytest.raises(ValueError) as raised:
        parse_endpoint(spec, strict=True)
    assert "one space" in str(raised.value)


def test_internal_endpoints_leave_the_public_entrypoint():
    keys = traefik_keys([Route(ep("PUT /internal/users/<id>/seen"), "users"), Route(ep("GET /api/users"))],
                        internal_entrypoint="internal")
    assert {k: v for k, v in keys.items() if "/entryPoints/" in k} == {
        R + "catchall/entryPoints/0": "web",
        R + "catchall/entryPoints/1": "internal",
        R + "get-api-users/entryPoints/0": "web",
        R + "get-api-users/entryPoints/1": "internal",
        # services call it through the internal entrypoint; the public one never routes it
        R + "put-internal-users-id-seen/entryPoints/0": "internal",
    }


def test_without_an_internal_entrypoint_every_router_is_on_the_one_entrypoint():
    keys = traefik_keys([Route(ep("POST /internal/users/authenticate"), "users")])
    assert keys[R + "post-internal-users-authenticate/entryPoints/0"] == "web"
    assert not any(k.endswith("/entryPoints/1") for k in keys)
    assert ep("POST /internal/users/authenticate").is_internal
    assert not ep("GET /api/internal").is_internal


def test_live_spec_names_what_traefik_keys_writes():
    routes = [Route(ep("GET /a")), Route(ep("GET /b"), "users"),
              Route(ep("GET /c"), weights={"users": 10, "monolith": 90}),
              Route(ep("GET /d"), mirror="comparator"), Route(ep("GET /e"), mirror="comparator", mirror_percent=25)]
    spec = live_spec(routes, monolith="flack")
    assert spec == {"get-a": "flack", "get-b": "users", "get-c": {"users": 10, "flack": 90},
                    "get-d": ShadowSpec("get-d-shadow", 100), "get-e": ShadowSpec("get-e-shadow", 25)}
    keys = traefik_keys(routes, monolith="flack")
    for router, expected in spec.items():
        service = keys[f"{R}{router}/service"]
        if isinstance(expected, ShadowSpec):  # the router points at the mirroring service copying that share
            assert service == expected.service
            assert keys[f"{S}{service}/mirroring/mirrors/0/percent"] == str(expected.percent)
        elif isinstance(expected, str):
            assert service == expected
        else:  # a canary: the router points at the weighted service holding those weights
            names = {keys[k] for k in keys if k.startswith(f"{S}{service}/weighted/services/") and k.endswith("/name")}
            assert names == set(expected)



def test_socketio_prefix_backends_get_a_sticky_cookie_and_a_canary_sticks_too() -> None:
    sio = Route(parse_endpoint("PREFIX /socket.io/"), "socketio")
    plain = Route(parse_endpoint("GET /api/users"), "users")
    keys = traefik_keys([sio, plain])
    base = "traefik/http/services/socketio/loadbalancer/sticky/cookie/"
    assert {k: v for k, v in keys.items() if "/sticky/" in k} == {
        base + "name": "strangler_sticky_socketio", base + "httpOnly": "true", base + "sameSite": "lax"}
    canary = Route(parse_endpoint("PREFIX /socket.io/"), "socketio", weights={"socketio": 10, "monolith": 90})
    sticky = sorted(k for k in traefik_keys([canary]) if k.endswith("/sticky/cookie/name"))
    assert sticky == ["traefik/http/services/monolith/loadbalancer/sticky/cookie/name",
                      "traefik/http/services/prefix-socket-io-canary/weighted/sticky/cookie/name",
                      "traefik/http/services/socketio/loadbalancer/sticky/cookie/name"]


def test_ab_router_keys_and_rule_exactly():
    from router.keys import Match, ab_priority, ab_router, match_rule, priority, sticky_cookie

    endpoint = parse_endpoint("GET /api/users/<id>")
    header = Match("users", "X-Canary", "1")
    assert match_rule(endpoint, header) == (
        "((Method(`GET`) || Method(`HEAD`)) && PathRegexp(`^/api/users/[^/]+$`)) && Header(`X-Canary`, `1`)")
    cookie = Match("users", "beta", "a.b", cookie=True)
    assert match_rule(endpoint, cookie).endswith("HeaderRegexp(`Cookie`, `(^|;\\s*)beta=a\\.b(;|$)`)")
    assert ab_priority(endpoint) == priority(endpoint) + 1
    keys = traefik_keys([Route(endpoint, match=header)])
    base = f"traefik/http/routers/{ab_router(endpoint.id)}/"
    assert keys[base + "service"] == "users" and keys[base + "priority"] == str(priority(endpoint) + 1)
    sticky = traefik_keys([Route(endpoint, weights={"users": 5, "monolith": 95}, sticky=True)])
    assert sticky["traefik/http/services/get-api-users-id-canary/weighted/sticky/cookie/name"] == \
        sticky_cookie(endpoint.id) == "strangler_get_api_users_id"
    plain = Route(endpoint)
    assert Route.from_json(plain.to_json()) == plain and "match" not in plain.to_dict()
    both = Route(endpoint, weights={"users": 5, "monolith": 95}, match=cookie, sticky=True)
    assert Route.from_json(both.to_json()) == both


@pytest.mark.parametrize("spec", ["X-Canary", ": 1", "X Canary: 1", "X-Canary: `1`", "X-Canary: "])
def test_bad_header_match_is_refused(spec):
    from router.keys import parse_header_match

    with pytest.raises(ValueError, match="Name: value"):
        parse_header_match("users", spec)


def test_a_blue_green_set_takes_every_router_of_its_backend_and_both_sets_stay_declared() -> None:
    from router.keys import colour_service, live_spec, traefik_service

    sets = {"users": ["users-green", "users"], "monolith": ["monolith-green", "monolith"]}
    flipped = Route(parse_endpoint("GET /api/users"), "users")
    canary = Route(parse_endpoint("POST /api/users"), weights={"users": 10, MONOLITH: 90})
    shadow = Route(parse_endpoint("GET /api/users/<id>"), mirror="users", candidate="users")
    ab = Route(parse_endpoint("PUT /api/users/<id>"), match=Match("users", "X-Canary", "1"))
    keys = traefik_keys([flipped, canary, shadow, ab], healthchecks={"users": "/healthz", "monolith": "/hz"},
                        sets=sets)
    assert keys["traefik/http/routers/get-api-users/service"] == "users-green"
    weighted = "traefik/http/services/post-api-users-canary/weighted/services/"
    assert {keys[weighted + "0/name"], keys[weighted + "1/name"]} == {"monolith-green", "users-green"}
    mirroring = "traefik/http/services/get-api-users-id-shadow/mirroring/"
    assert (keys[mirroring + "service"], keys[mirroring + "mirrors/0/name"]) == ("monolith-green", "users-green")
    assert keys["traefik/http/routers/put-api-users-id_ab/service"] == "users-green"
    assert keys["traefik/http/routers/catchall/service"] == "monolith-green"
    for service in ("users", "users-green", "monolith", "monolith-green"):
        assert keys[f"traefik/http/services/{service}/loadbalancer/healthcheck/path"].startswith("/h")
    assert live_spec([flipped, ab], sets=sets) == {"get-api-users": "users-green", "put-api-users-id":
                                                   "monolith-green", "put-api-users-id_ab": "users-green"}
    assert traefik_service("users", sets={"users": ["users-green"]}) == "users-green"
    assert (colour_service("users", "users"), colour_service("users", "users-green")) == ("users-green", "users")


def test_a_backend_declared_sticky_gets_the_cookie_on_every_set_and_canary() -> None:
    sets = {"users": ["users-green", "users"]}
    flipped = Route(parse_endpoint("GET /api/users"), "users")
    canary = Route(parse_endpoint("POST /api/users"), weights={"users": 10, MONOLITH: 90})
    keys = traefik_keys([flipped, canary], healthchecks={"users": "/healthz"}, sets=sets, sticky=["users"])
    names = sorted(k for k in keys if k.endswith("/sticky/cookie/name"))
    assert names == ["traefik/http/services/post-api-users-canary/weighted/sticky/cookie/name",
                     "traefik/http/services/users-green/loadbalancer/sticky/cookie/name",
                     "traefik/http/services/users/loadbalancer/sticky/cookie/name"]
    assert keys["traefik/http/services/users-green/loadbalancer/sticky/cookie/name"] == \
        "strangler_sticky_users-green"
    assert not [k for k in traefik_keys([flipped, canary]) if "/sticky/" in k]
