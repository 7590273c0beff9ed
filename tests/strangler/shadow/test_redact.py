"""strangler.shadow.redact: credentials replaced in bodies, targets, headers and differences."""

from __future__ import annotations

import json

import pytest

from strangler.shadow.redact import (
    REDACTED,
    is_secret_name,
    redact_difference,
    redact_example,
    redact_headers,
    redact_target,
    redact_text,
)


@pytest.mark.parametrize("name", ["password", "Password", "new_password", "token", "access_token", "refreshToken",
                                  "Authorization", "Set-Cookie", "client_secret", "api-key", "apiKey",
                                  "session_id", "X-Strangler-Mirror"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["nickname", "id", "source", "last_seen_at", "keyboard", "online", 3, None])
def test_ordinary_names(name):
    assert not is_secret_name(name)


def test_json_is_redacted_at_any_depth_and_kept_otherwise():
    body = {"nickname": "a", "password": "p", "users": [{"token": "t", "id": 1}], "n": {"secret": {"x": 1}}}
    assert json.loads(redact_text(json.dumps(body))) == {
        "nickname": "a", "password": REDACTED, "users": [{"token": REDACTED, "id": 1}], "n": {"secret": REDACTED}}


def test_text_cut_short_and_forms_are_redacted_by_pattern():
    cut = '{"nickname": "a", "password": "hunter2", "token": "eyJhbGci'
    assert redact_text(cut) == f'{{"nickname": "a", "password": "{REDACTED}", "token": "{REDACTED}"'
    assert redact_text("nickname=a&password=hunter2&x=1") == f"nickname=a&password={REDACTED}&x=1"
    assert redact_text("plain words, no secrets") == "plain words, no secrets"
    assert redact_text("[" * 5000) == "[" * 5000  # not JSON, and not a crash


def test_targets_headers_and_differences():
    assert redact_target("/api/users?token=abc&page=2") == "/api/users?token=%5Bredacted%5D&page=2"
    assert redact_target("/api/users?page=2") == "/api/users?page=2"
    assert redact_headers({"Authorization": "Bearer x", "Content-Type": "a/b"}) == {
        "Authorization": REDACTED, "Content-Type": "a/b"}
    assert redact_difference({"path": "token", "left": "a", "right": "b"})["right"] == REDACTED
    assert redact_difference({"path": "headers.Set-Cookie", "left": "s=1", "right": None})["left"] == REDACTED
    assert redact_difference({"path": "user", "left": {"password": "p"}, "right": 1})["left"] == {
        "password": REDACTED}
    assert redact_difference({"path": "users[2].nickname", "left": "a", "right": "b"})["right"] == "b"


def test_redacting_twice_changes_nothing():
    example = {"request": {"method": "POST", "target": "/a?token=t", "body": '{"password": "p"}'},
               "monolith": {"status": 200, "headers": {}, "body": '{"token": "x"}'},
               "candidate": {"status": 200, "headers": {}, "body": "token=y"},
               "differences": [{"path": "token", "pattern": "token", "kind": "changed", "left": "x", "right": "y"}]}
    once = redact_example(example)
    assert redact_example(once) == once
    assert "p" not in json.loads(once["request"]["body"]).values()
