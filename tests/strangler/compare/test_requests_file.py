"""Requests files: the text format with headers and bodies, JSONL, HAR, and malformed lines."""

from __future__ import annotations

import json

import pytest

from strangler.compare.requests_file import (
    Request,
    parse_request_line,
    parse_requests,
    read_requests,
)


def test_text_lines_with_comments_headers_and_body():
    text = (
        "# users first\n"
        "GET /api/users?online=1\n"
        "\n"
        "get http://localhost:8000/api/users/1?x=2\n"
        "    Authorization: Bearer abc\n"
        "\tAccept: application/json\n"
        "PUT /api/users/1\n"
        "    Content-Type: application/json\n"
        '    < {"nickname": "ann"}\n'
    )
    assert parse_requests(text) == [
        Request("GET", "/api/users?online=1", line=2),
        Request("GET", "/api/users/1?x=2",
                (("Authorization", "Bearer abc"), ("Accept", "application/json")), line=4),
        Request("PUT", "/api/users/1", (("Content-Type", "application/json"),),
                b'{"nickname": "ann"}', line=7),
    ]


def test_request_properties():
    request = parse_request_line("delete /api/tokens?all=1")
    assert request.method == "DELETE" and not request.safe
    assert request.path == "/api/tokens" and str(request) == "DELETE /api/tokens?all=1"
    assert parse_request_line("HEAD /").safe


@pytest.mark.parametrize(("text", "message"), [
    ("GET /a\nFETCH /b\n", "line 2: unknown method 'FETCH'"),
    ("GET /a\n\nGET api/users\n", "line 3: 'api/users' is not a path"),
    ("GET /a b\n", "line 1: 'GET /a b' is not \"METHOD /path?query\""),
    ("   Accept: x\nGET /a\n", "line 1: an indented line needs a request line"),
    ("GET /a\n  no colon here\n", "line 2: 'no colon here' is not a header"),
    ("POST /a\n  < {}\n  < {}\n", "line 3: POST /a already has a body"),
    ("GET\n", "line 1:"),
])
def test_malformed_text_names_the_line(text, message):
    with pytest.raises(ValueError, match="^" + message.replace("?", r"\?").replace("(", r"\(")):
        parse_requests(text)


def test_jsonl_with_json_or_text_bodies():
    text = "\n".join([
        json.dumps({"method": "GET", "path": "/api/users", "headers": {"Accept": "x"}}),
        "",
        json.dumps({"method": "POST", "url": "http://h/api/messages", "body": {"source": "hi"}}),
        json.dumps({"path": "/api/users/1", "body": "raw"}),
    ])
    assert parse_requests(text) == [
        Request("GET", "/api/users", (("Accept", "x"),), line=1),
        Request("POST", "/api/messages", (), b'{"source": "hi"}', line=3),
        Request("GET", "/api/users/1", (), b"raw", line=4),
    ]


def test_malformed_jsonl_names_the_line():
    with pytest.raises(ValueError, match="^line 2: not JSON"):
        parse_requests('{"path": "/a"}\n{"path": \n')
    with pytest.raises(ValueError, match="^line 1: needs \"path\""):
        parse_requests('{"method": "GET"}\n{"path": "/b"}\n')
    with pytest.raises(ValueError, match="^line 1: \"headers\" must be an object of strings"):
        parse_requests('{"path": "/a", "headers": {"X": 1}}\n')


def test_har_entries_keep_headers_worth_replaying():
    har = {"log": {"version": "1.2", "entries": [
        {"request": {"method": "GET", "url": "http://127.0.0.1:8000/api/users?online=1",
                     "headers": [{"name": "Host", "value": "x"}, {"name": ":authority", "value": "x"},
                                 {"name": "Authorization", "value": "Bearer t"},
                                 {"name": "If-None-Match", "value": '"abc"'},
                                 {"name": "if-modified-since", "value": "Mon, 30 Nov 2026 10:00:00 GMT"}]}},
        {"request": {"method": "POST", "url": "https://example.test/api/messages", "headers": [],
                     "postData": {"mimeType": "application/json", "text": '{"source": "x"}'}}},
    ]}}
    assert parse_requests(json.dumps(har, indent=2)) == [
        Request("GET", "/api/users?online=1", (("Authorization", "Bearer t"),), line=1, source="entry"),
        Request("POST", "/api/messages", (), b'{"source": "x"}', line=2, source="entry"),
    ]


def test_har_websockets_are_skipped_and_counted_by_entry():
    har = {"log": {"entries": [
        {"request": {"method": "GET", "url": "http://h/api/users", "headers": []}},
        {"_resourceType": "websocket", "response": {"status": 101},
         "request": {"method": "GET", "url": "ws://h/socket.io/?EIO=4&transport=websocket", "headers": []}},
        {"response": {"status": 101},
         "request": {"method": "GET", "url": "http://h/socket.io/?EIO=4&transport=websocket", "headers": []}},
        {"request": {"method": "GET", "url": "wss://h/live", "headers": []}},
    ]}}
    parsed = read_requests(json.dumps(har))
    assert parsed.kind == "har" and parsed.websockets == (2, 3, 4)
    assert [(r.target, r.where) for r in parsed.requests] == [("/api/users", "entry 1")]
    assert read_requests("GET /a\n").kind == "text" and read_requests('{"path": "/a"}\n').kind == "jsonl"


def test_malformed_har_names_the_entry():
    har = {"log": {"entries": [{"request": {"method": "GET", "url": "http://h/a"}},
                               {"response": {}}]}}
    with pytest.raises(ValueError, match="^HAR entry 2: needs request.method and request.url"):
        parse_requests(json.dumps(har))
    with pytest.raises(ValueError, match="log.entries is missing"):
        parse_requests(json.dumps({"log": {}}))


def test_empty_file_has_no_requests():
    assert parse_requests("# nothing yet\n\n") == []
