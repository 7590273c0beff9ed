"""strangler.stack.rotate against real writers: Traefik's access log and a process's stdout log."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

import pytest
import requests
import servers

from router import table
from router.keys import Route, parse_endpoint
from strangler.stack import procs
from strangler.stack.rotate import rotate, rotate_logs, rotated_files

pytestmark = pytest.mark.integration


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def _wait(predicate, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_traefik_access_log_rotates_without_losing_a_line(traefik_server):
    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    log = traefik_server.access_log
    kv = traefik_server.etcd.client()
    with servers.serving(hello) as url:
        kv.put("traefik/http/services/hello/loadbalancer/servers/hello-1/url", url)
        table.apply(kv, lambda routes: [Route(parse_endpoint("GET /hello"), "hello")], who="t@h", what="routes")
        traefik_server.api.wait_live({"get-hello": "hello"})
        web = traefik_server.web_url + "/hello"
        sent = 0
        for _ in range(40):
            assert requests.get(web, timeout=5).text == "hello"
            sent += 1
        _wait(lambda: len(_lines(log)) >= sent, "the first 40 lines")

        rotate(log, keep=2, reopen=lambda: os.kill(traefik_server.proc.pid, signal.SIGUSR1))

        def new_file_written() -> bool:
            nonlocal sent
            assert requests.get(web, timeout=5).status_code == 200
            sent += 1
            return len(_lines(log)) > 0
        _wait(new_file_written, "Traefik to reopen its access log")
        for _ in range(20):
            assert requests.get(web, timeout=5).status_code == 200
            sent += 1

    every = lambda: _lines(log.with_name(log.name + ".1")) + _lines(log)  # noqa: E731
    _wait(lambda: len(every()) >= sent, "every request's line")
    paths = [json.loads(line)["RequestPath"] for line in every()]
    assert paths.count("/hello") == sent
    assert len(_lines(log)) >= 21  # what came after the reopen went to the fresh file


WRITER = """
import sys, time
for n in range(int(sys.argv[1])):
    print(f"line {n:06d} " + "x" * 80, flush=True)
    time.sleep(0.0005)
"""


def test_a_process_log_is_copied_and_truncated_while_it_writes(tmp_path):
    log = tmp_path / "logs" / "writer.log"
    total = 4000
    proc = procs.Proc("writer", [sys.executable, "-c", WRITER, str(total)], log).start()
    rotations = 0
    try:
        while proc.popen.poll() is None and rotations < 6:
            if log.exists() and log.stat().st_size > 40_000:
                rotate(log, keep=10)
                rotations += 1
            time.sleep(0.01)
        proc.popen.wait(timeout=60)
    finally:
        proc.stop()
    assert rotations >= 3, "the writer finished before the test could rotate its log"

    copies = list(reversed(rotated_files(log)))  # oldest first
    assert len(copies) == rotations
    data = b"".join(p.read_bytes() for p in copies) + log.read_bytes()
    assert b"\0" not in data, "the writer left a hole: it did not append at the new end"
    lines = data.decode().splitlines()
    whole = [line for line in lines if re.fullmatch(r"line \d{6} x{80}", line)]
    numbers = [int(line.split()[1]) for line in whole]
    assert numbers == sorted(numbers) and numbers[-1] == total - 1
    # only lines written in the instant between the copy and the cut may be lost, or torn there
    # (the copy read the start of a line whose end went with the cut)
    assert total - len(numbers) <= rotations and len(lines) - len(whole) <= rotations


def test_rotate_logs_rotates_only_big_logs_and_keeps_at_most_keep(tmp_path):
    big, small = tmp_path / "big.log", tmp_path / "small.log"
    small.write_text("s\n")
    for round_ in range(5):
        big.write_text(f"round {round_}\n" * 100)
        assert rotate_logs(tmp_path, max_bytes=500, keep=3) == [big]
    assert [p.read_text().splitlines()[0] for p in rotated_files(big)] == ["round 4", "round 3", "round 2"]
    assert big.read_text() == "" and small.read_text() == "s\n"
    assert not (tmp_path / "small.log.1").exists()
    # each copy was written under another name and renamed whole: nothing of it is left over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.log", "big.log.1", "big.log.2", "big.log.3",
                                                         "small.log"]
    with pytest.raises(ValueError, match="keep at least 1"):
        rotate(big, keep=0)
