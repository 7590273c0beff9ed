"""The diff engine on hand-made answers: JSON by path, sets, ignore rules, noise, text, caps."""

from __future__ import annotations

import json

import pytest

from strangler.compare.diff import (
    Answer,
    Difference,
    Rule,
    diff,
    format_path,
    matches,
    noise_between,
    parse_path,
    pattern_of,
)
from strangler.plan import CompareRule

JSON = {"Content-Type": "application/json"}


def answer(body: object, status: int = 200, headers: dict | None = None) -> Answer:
    return Answer(status, JSON if headers is None else headers, json.dumps(body).encode())


def kinds(found: list[Difference]) -> list[tuple[str, str]]:
    return [(d.path, d.kind) for d in found]


def test_identical_answers_have_no_difference():
    body = {"users": [{"id": 1, "nickname": "ann"}], "total": 1}
    assert diff(answer(body), answer(body)) == []


def test_changed_scalar_is_named_by_path_and_pattern():
    left = {"users": [{"id": 1, "nickname": "ann"}, {"id": 2, "nickname": "bob"}]}
    right = {"users": [{"id": 1, "nickname": "ann"}, {"id": 2, "nickname": "BOB"}]}
    assert diff(answer(left), answer(right)) == [
        Difference("users[1].nickname", "users[*].nickname", "changed", "bob", "BOB")
    ]


def test_type_change_is_not_a_value_change():
    found = diff(answer({"id": 1, "online": True}), answer({"id": "1", "online": 1}))
    assert kinds(found) == [("id", "type"), ("online", "type")]


def test_int_and_float_of_same_value_are_equal():
    assert diff(answer({"n": 1}), answer({"n": 1.0})) == []


def test_missing_key_is_not_null():
    found = diff(answer({"a": None, "b": 1}), answer({"b": 1, "a": 0}))
    assert kinds(found) == [("a", "type")]
    found = diff(answer({"a": None, "b": 1}), answer({"b": 1}))
    assert kinds(found) == [("a", "missing")]


def test_extra_key_on_the_right():
    found = diff(answer({"a": 1}), answer({"a": 1, "b": {"c": 2}}))
    assert found == [Difference("b", "b", "extra", None, {"c": 2})]


def test_nested_lists_by_position_with_missing_and_extra_elements():
    left = {"rows": [[1, 2], [3, 4, 5]]}
    right = {"rows": [[1, 2, 9], [3, 0]]}
    assert kinds(diff(answer(left), answer(right))) == [
        ("rows[0][2]", "extra"), ("rows[1][1]", "changed"), ("rows[1][2]", "missing"),
    ]


def test_ordered_list_reordered_is_a_difference_but_a_set_is_not():
    left = {"users": [{"id": 1}, {"id": 2}, {"id": 3}]}
    right = {"users": [{"id": 3}, {"id": 1}, {"id": 2}]}
    assert diff(answer(left), answer(right)) != []
    assert diff(answer(left), answer(right), Rule(sets=("users",))) == []


def test_set_counts_duplicates():
    found = diff(answer({"tags": ["a", "a", "b"]}), answer({"tags": ["b", "a"]}), Rule(sets=("tags",)))
    assert kinds(found) == [("tags[1]", "missing")]


def test_set_elements_are_paired_by_id_to_name_the_field():
    left = {"users": [{"id": 1, "nickname": "ann"}, {"id": 2, "nickname": "bob"}]}
    right = {"users": [{"id": 2, "nickname": "bobby"}, {"id": 1, "nickname": "ann"}, {"id": 7}]}
    found = diff(answer(left), answer(right), Rule(sets=("users",)))
    assert found == [
        Difference("users[1].nickname", "users[*].nickname", "changed", "bob", "bobby"),
        Difference("users[2]", "users[*]", "extra", None, {"id": 7}),
    ]


def test_ignore_paths_with_wildcard_index_inside_a_set():
    left = {"users": [{"id": 1, "last_seen_at": 10}, {"id": 2, "last_seen_at": 20}]}
    right = {"users": [{"id": 2, "last_seen_at": 21}, {"id": 1, "last_seen_at": 11}]}
    rule = Rule(ignore=("users[*].last_seen_at",), sets=("users",))
    assert diff(answer(left), answer(right), rule) == []
    assert kinds(diff(answer(left), answer(right), Rule(sets=("users",)))) == [
        ("users[0].last_seen_at", "changed"), ("users[1].last_seen_at", "changed"),
    ]


def test_ignoring_a_path_ignores_everything_under_it():
    found = diff(answer({"meta": {"a": 1, "b": [1]}, "x": 1}), answer({"meta": {"a": 2}, "x": 2}),
                 Rule(ignore=("meta",)))
    assert kinds(found) == [("x", "changed")]


def test_noise_patterns_hide_only_their_fields():
    left = {"token": "abc", "user": {"id": 1, "nickname": "ann"}}
    right = {"token": "xyz", "user": {"id": 1, "nickname": "anne"}}
    found = diff(answer(left), answer(right), noise=frozenset({"token"}))
    assert kinds(found) == [("user.nickname", "changed")]
    found = diff(answer(left), answer(right), noise=frozenset({"Token", "user.Nickname"}))
    assert kinds(found) == [("token", "changed"), ("user.nickname", "changed")]


def test_noise_between_two_answers_of_one_backend():
    first = answer({"users": [{"id": 1, "seen": 5}, {"id": 2, "seen": 6}], "request_id": "r1"})
    second = answer({"users": [{"id": 1, "seen": 8}, {"id": 2, "seen": 6}], "request_id": "r2"})
    noise = noise_between(first, second)
    assert noise == frozenset({"users[*].seen", "request_id"})
    candidate = answer({"users": [{"id": 1, "seen": 9}, {"id": 2, "seen": 1, "x": 0}], "request_id": "c"})
    assert kinds(diff(first, candidate, noise=noise)) == [("users[1].x", "extra")]


def test_status_and_chosen_headers_only():
    left = Answer(201, {"Content-Type": "application/json", "Date": "Mon", "X-A": "1"}, b"{}")
    right = Answer(200, {"content-type": "text/html", "Date": "Tue", "X-A": "2"}, b"{}")
    found = diff(left, right, Rule(headers=("Content-Type",)))
    assert found == [
        Difference("status", "status", "status", 201, 200),
        Difference("headers.Content-Type", "headers.Content-Type", "header", "application/json",
                   "text/html"),
    ]
    assert kinds(diff(left, right, Rule(headers=("X-A",)))) == [("status", "status"), ("headers.X-A", "header")]
    assert kinds(diff(left, right, Rule(headers=("X-A",), ignore=("headers.x-a",)))) == [("status", "status")]


def test_location_compared_by_path_not_host():
    left = Answer(201, {"Location": "http://127.0.0.1:5001/api/users/3"}, b"")
    same = Answer(201, {"Location": "http://127.0.0.1:6002/api/users/3"}, b"")
    other = Answer(201, {"Location": "http://127.0.0.1:5001/api/users/4"}, b"")
    assert diff(left, same) == []
    assert kinds(diff(left, other)) == [("headers.Location", "header")]


def test_text_bodies_are_line_diffed():
    left = Answer(200, {"Content-Type": "text/html"}, b"<html>\n<p>hi</p>\n<p>3</p>\n</html>\n")
    right = Answer(200, {"Content-Type": "text/html"}, b"<html>\n<p>hi</p>\n<p>4</p>\n</html>\n")
    assert diff(left, right) == [Difference("body:3", "body", "text", "<p>3</p>", "<p>4</p>")]


def test_json_against_text_is_a_body_type_difference():
    left = answer({"a": 1})
    right = Answer(500, {"Content-Type": "text/html"}, b"<h1>Internal Server Error</h1>")
    found = diff(left, right, Rule(headers=()))
    assert found == [Difference("status", "status", "status", 200, 500),
                     Difference("body", "body", "type", "JSON", "text")]


def test_huge_values_are_shortened_in_the_difference():
    found = diff(answer({"blob": "x" * 10_000}), answer({"blob": "y" * 10_000}))
    assert len(found) == 1 and len(found[0].left) < 1100 and "10000 characters" in found[0].left


def test_max_differences_ends_in_truncated():
    found = diff(answer(list(range(500))), answer([-1] * 500), max_differences=10)
    assert len(found) == 11
    assert found[-1].kind == "truncated" and "more than 10" in found[-1].left


def test_fifty_megabytes_of_json_is_capped_with_a_truncated_difference():
    item = b'{"id": 1, "name": "' + b"n" * 80 + b'"}, '
    body = b"[" + item * (50 * 1024 * 1024 // len(item)) + b"1]"
    assert len(body) > 50 * 1024 * 1024 - 200
    found = diff(Answer(200, JSON, body), Answer(200, JSON, body[:-2] + b"2]"))
    assert [(d.path, d.kind) for d in found] == [("body", "truncated")]
    assert diff(Answer(200, JSON, body), Answer(200, JSON, bytes(body))) == []


def test_hundred_thousand_element_list_is_compared_in_full():
    left = [{"id": i, "v": i % 7} for i in range(100_000)]
    right = [dict(x) for x in left]
    right[99_123]["v"] = "changed"
    assert diff(answer(left), answer(right)) == [
        Difference("[99123].v", "[*].v", "type", 99_123 % 7, "changed")
    ]


def test_node_budget_ends_in_truncated():
    found = diff(answer(list(range(1000))), answer(list(range(1, 1001))), max_nodes=100,
                 max_differences=10_000)
    assert found[-1].kind == "truncated" and len(found) <= 101


def test_deep_nesting_is_capped():
    deep_left: object = 1
    deep_right: object = 2
    for _ in range(30):
        deep_left, deep_right = {"a": deep_left}, {"a": deep_right}
    found = diff(answer(deep_left), answer(deep_right), max_depth=10)
    assert [d.kind for d in found] == ["truncated"]
    assert found[0].path == ".".join(["a"] * 10)


def test_paths_parse_format_and_match():
    assert parse_path('users[3].name') == ("users", 3, "name")
    assert parse_path('[*].id') == (None, "id")
    assert format_path(parse_path('a["x y"][2].b-c')) == 'a["x y"][2].b-c'
    assert pattern_of("users[12].tags[0]") == "users[*].tags[*]"
    assert matches("users[*].last_seen_at", "users[4].last_seen_at")
    assert matches("users", "users[4].last_seen_at")
    assert not matches("users[*].last_seen_at", "users[4].nickname")
    assert matches("*.id", "user.id") and not matches("*.id", "[0].id")
    with pytest.raises(ValueError, match="not a JSON path"):
        parse_path("users..x")


def test_rule_from_the_plans_compare_rule():
    rule = Rule.from_plan(CompareRule(ignore=("a",), headers=("ETag",), sets=("s",), shadow_unsafe=True))
    assert rule == Rule(ignore=("a",), headers=("ETag",), sets=("s",))


def test_answer_header_lookup_ignores_case():
    assert Answer(200, {"content-type": "x"}, b"").header("Content-Type") == "x"
    assert Answer(200, {}, b"").header("Content-Type") is None
