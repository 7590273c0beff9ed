"""`strangler compare --file` on malformed or huge requests files: one line, exit 2, nothing sent.

The backends' URLs point at a port nobody listens on: a file that parsed would fail
differently (a connection error), so each refusal here comes from reading the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from strangler.cli import cli
from strangler.compare.cli import MAX_FILE_BYTES, MAX_REQUESTS
from strangler.stack import procs

PLAN = Path(__file__).resolve().parents[3] / "strangler.toml"
GET = {"method": "GET", "url": "http://app.example/api/users/1"}


def compare(path: Path) -> tuple[int, str]:
    nobody = f"http://127.0.0.1:{procs.free_port()}"
    result = CliRunner().invoke(cli, ["compare", "--file", str(path), "--against", "users", "--every-request",
                                      "--monolith-url", nobody, "--candidate-url", nobody,
                                      "--plan", str(PLAN)])
    return result.exit_code, result.output


@pytest.mark.parametrize(("har", "message"), [
    ({"log": []}, "log.entries is missing"),
    ({"log": "x"}, "log.entries is missing"),
    ({"log": {"entries": [{"request": {**GET, "headers": ["Accept: */*"]}}]}}, "HAR entry 1: a header must be"),
    ({"log": {"entries": [{"request": {**GET, "postData": "a=b"}}]}}, "HAR entry 1: request.postData must"),
    ({"log": {"entries": [{"request": {"method": "GET", "url": "http://[::1/a"}}]}}, "HAR entry 1: "),
])
def test_a_malformed_har_is_refused_in_one_line_naming_what_is_wrong(tmp_path, har, message):
    path = tmp_path / "session.har"
    path.write_text(json.dumps(har))
    code, output = compare(path)
    assert code == 2 and message in output, output
    assert len(output.strip().splitlines()) == 1


def test_json_nested_too_deeply_is_refused_not_a_recursion_error(tmp_path):
    for name, text in (("deep.har", '{"log": ' + "[" * 100_000 + "]" * 100_000 + "}"),
                       ("deep.jsonl", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n{}\n")):
        path = tmp_path / name
        path.write_text(text)
        code, output = compare(path)
        assert code == 2 and "nested too deeply" in output, output
        assert len(output.strip().splitlines()) == 1


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.har"
    with path.open("wb") as handle:  # sparse: no disk used, and it must not be read into memory
        handle.truncate(MAX_FILE_BYTES + 1)
    code, output = compare(path)
    assert code == 2 and "MiB" in output, output
    assert len(output.strip().splitlines()) == 1


def test_more_requests_than_one_run_takes_are_refused_before_any_is_sent(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("GET /api/users/1\n" * (MAX_REQUESTS + 1))
    code, output = compare(path)
    assert code == 2 and f"at most {MAX_REQUESTS:,}" in output, output[-500:]
    assert len(output.strip().splitlines()) == 1
