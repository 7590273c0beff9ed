"""The comparator app and its worker against real HTTP backends served from threads.

The monolith stand-in answers with a timestamp and a token that change on
every call (noise); the candidate behaves the same, or is wrapped to change
a field (a real divergence). No etcd here: a StaticDirectory says which
endpoint is shadowed to whom (tests/e2e/test_shadow.py covers etcd and Traefik).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from router.keys import parse_endpoint
from strangler.plan import CompareRule
from strangler.shadow import create_app
from strangler.shadow.store import ShadowStore, read_report
from strangler.shadow.worker import Comparator, Mirrored, StaticDirectory

SECRET = "mirror-secret-for-tests"
USER = parse_endpoint("GET /api/users/<id>")
NEW = parse_endpoint("POST /api/users")


def user_answer(path: str) -> dict:
    """What the monolith says about a user: stable fields plus per-call noise."""
    tail = path.rsplit("/", 1)[-1]
    return {"id": int(tail) if tail.isdigit() else 0, "nickname": "susan",
            "updated_at": f"{time.time():.6f}", "token": secrets.token_hex(8),
            "links": [{"rel": "self", "at": time.perf_counter_ns()}]}


class Backend(ThreadingHTTPServer):
    """A real HTTP server in a thread; ``answer(path)`` builds the JSON; ``hits`` records requests."""

    daemon_threads = True

    def __init__(self, answer: Callable[[str], dict], delay: float = 0.0) -> None:
        self.hits: list[tuple[str, str, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                server.hits.append((self.command, self.path, self.rfile.read(length)))
                time.sleep(delay)
                body = json.dumps(answer(self.path.split("?")[0])).encode()
                self.send_response(201 if self.command == "POST" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    made = {
        "monolith": Backend(user_answer),
        "users": Backend(user_answer),
        "broken": Backend(lambda path: {**user_answer(path), "nickname": "SUSAN"}),
    }
    yield made
    for backend in made.values():
        backend.stop()


def comparator(tmp_path: Path, backends: dict[str, Backend], target: str,
               rules: Callable = lambda e: CompareRule(), **options) -> Comparator:
    directory = StaticDirectory({USER: target, NEW: target},
                                {name: [b.url] for name, b in backends.items()}, secret=SECRET)
    return Comparator(directory, ShadowStore(tmp_path / "shadow.sqlite"), rules, **options)


def mirror_client(comp: Comparator):
    """A test client sending what Traefik sends: every request marked with the mirror secret."""
    client = create_app(comparator=comp).test_client()
    client.environ_base["HTTP_X_STRANGLER_MIRROR"] = SECRET
    return client


def get(path: str, method: str = "GET", body: bytes = b"") -> Mirrored:
    return Mirrored(method, path, "", (("Accept", "application/json"),), body)


def wait_compared(comp: Comparator, endpoint: str, n: int, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        comp.store.flush()
        (entry,) = read_report(comp.store.path, endpoint) or [{"compared": 0, "errors": 0}]
        if entry["compared"] + entry["errors"] >= n:
            return entry
        time.sleep(0.05)
    raise AssertionError(f"{endpoint}: fewer than {n} comparisons within {timeout}s")


def test_noise_learned_from_two_monolith_answers_leaves_zero_differences(tmp_path, backends):
    comp = comparator(tmp_path, backends, "users").start()
    client = mirror_client(comp)
    for i in range(10):
        assert client.get(f"/api/users/{i}").status_code == 204
    entry = wait_compared(comp, str(USER), 10)
    comp.stop()
    assert (entry["seen"], entry["compared"], entry["differing"], entry["errors"]) == (10, 10, 0, 0)
    assert entry["diff_rate"] == 0
    assert {"updated_at", "token", "links[*].at"} <= set(entry["noise"])
    assert "nickname" not in entry["noise"]
    # each copy was replayed: the monolith twice, the candidate once
    assert (len(backends["monolith"].hits), len(backends["users"].hits)) == (20, 10)


def test_a_planted_divergence_is_reported_with_its_field_and_an_example(tmp_path, backends):
    comp = comparator(tmp_path, backends, "broken").start()
    client = mirror_client(comp)
    for i in range(5):
        client.get(f"/api/users/{i}?verbose=1")
    entry = wait_compared(comp, str(USER), 5)
    comp.stop()
    assert (entry["compared"], entry["differing"], entry["diff_rate"]) == (5, 5, 1.0)
    assert [(p["pattern"], p["count"]) for p in entry["patterns"]] == [("nickname", 5)]
    example = entry["examples"][0]
    assert example["request"]["target"].endswith("?verbose=1")
    (difference,) = example["differences"]
    assert (difference["left"], difference["right"]) == ("susan", "SUSAN")
    assert '"SUSAN"' in example["candidate"]["body"] and '"susan"' in example["monolith"]["body"]


def test_unsafe_methods_are_not_replayed_unless_the_plan_allows(tmp_path, backends):
    comp = comparator(tmp_path, backends, "users")
    assert comp.submit(get("/api/users", "POST", b'{"nickname": "x"}')) == "skipped"
    assert comp.queue.qsize() == 0
    comp.store.flush()
    (entry,) = read_report(comp.store.path, str(NEW))
    assert (entry["seen"], entry["skipped"], entry["compared"]) == (1, 1, 0)

    allowed = comparator(tmp_path, backends, "users", rules=lambda e: CompareRule(shadow_unsafe=True))
    assert allowed.submit(get("/api/users", "POST", b'{"nickname": "x"}')) == "queued"
    allowed.start()
    wait_compared(allowed, str(NEW), 1)
    allowed.stop()
    posts = [hit for hit in backends["monolith"].hits + backends["users"].hits if hit[0] == "POST"]
    assert [body for _, _, body in posts] == [b'{"nickname": "x"}'] * 3


def test_a_full_queue_drops_and_counts_instead_of_growing(tmp_path, backends):
    comp = comparator(tmp_path, backends, "users", queue_size=3)  # no workers: nothing drains it
    outcomes = [comp.submit(get(f"/api/users/{i}")) for i in range(10)]
    assert outcomes.count("queued") == 3 and outcomes.count("dropped") == 7
    assert comp.queue.qsize() == 3
    comp.store.flush()
    (entry,) = read_report(comp.store.path, str(USER))
    assert (entry["seen"], entry["dropped"]) == (10, 7)


def test_a_sampling_share_compares_exactly_that_share_and_counts_the_rest(tmp_path, backends):
    comp = comparator(tmp_path, backends, "users", sample=0.25).start()
    client = mirror_client(comp)
    outcomes = [client.get(f"/api/users/{i}").headers["X-Shadow"] for i in range(20)]
    assert outcomes.count("queued") == 5 and outcomes.count("sampled out") == 15
    entry = wait_compared(comp, str(USER), 5)
    comp.stop()
    assert (entry["seen"], entry["compared"], entry["sampled_out"], entry["dropped"]) == (20, 5, 15, 0)
    assert len(backends["users"].hits) == 5


@pytest.mark.parametrize("share", [0, -0.5, 1.5])
def test_a_sampling_share_outside_0_to_1_is_refused(tmp_path, backends, share):
    with pytest.raises(ValueError, match="share above 0 and at most 1"):
        comparator(tmp_path, backends, "users", sample=share)


def test_drops_show_in_strangler_diffs_with_what_to_do(tmp_path, backends):
    from click.testing import CliRunner

    from strangler.cli import cli

    comp = comparator(tmp_path, backends, "users", queue_size=1)  # not started: the queue fills
    client = mirror_client(comp)
    for i in range(4):
        client.get(f"/api/users/{i}")
    comp.store.flush()
    result = CliRunner().invoke(cli, ["diffs", "--run-dir", str(tmp_path), "--plan", str(tmp_path / "none.toml")])
    assert result.exit_code == 0, result.output
    assert "3 copies dropped" in result.output and "STRANGLER_SHADOW_SAMPLE" in result.output


def test_a_store_written_before_sampling_existed_gets_the_counter(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "shadow.sqlite")
    old.execute("CREATE TABLE endpoints (endpoint TEXT PRIMARY KEY, target TEXT, updated REAL, "
                "seen INTEGER DEFAULT 0, compared INTEGER DEFAULT 0, differing INTEGER DEFAULT 0, "
                "dropped INTEGER DEFAULT 0, skipped INTEGER DEFAULT 0, errors INTEGER DEFAULT 0, "
                "last_error TEXT)")
    old.execute("INSERT INTO endpoints (endpoint, seen) VALUES ('GET /x', 3)")
    old.commit()
    old.close()
    store = ShadowStore(tmp_path / "shadow.sqlite")
    store.count("GET /x", "sampled_out", 2)
    store.flush()
    (entry,) = read_report(store.path)
    assert (entry["seen"], entry["sampled_out"]) == (3, 2)


def test_copies_are_answered_at_once_while_backends_are_slow(tmp_path):
    slow = {"monolith": Backend(user_answer, delay=0.5), "users": Backend(user_answer, delay=0.5)}
    try:
        comp = comparator(tmp_path, slow, "users", workers=1, queue_size=2).start()
        client = mirror_client(comp)
        began = time.monotonic()
        answers = [client.get(f"/api/users/{i}") for i in range(20)]
        # twenty copies, each replayed to two backends that take 0.5 s: answered after their
        # replays, they would take 10 s or more; at once, well under half that even on a busy machine
        assert time.monotonic() - began < 5
        assert {a.status_code for a in answers} == {204}
        assert [a.headers["X-Shadow"] for a in answers].count("dropped") >= 15
        comp.stop(timeout=0.1)
    finally:
        for backend in slow.values():
            backend.stop()


def test_an_unreachable_candidate_counts_an_error_not_a_difference(tmp_path, backends):
    dead = Backend(user_answer)
    dead.stop()
    directory = StaticDirectory({USER: "users"}, {"monolith": [backends["monolith"].url],
                                                   "users": [dead.url]})
    comp = Comparator(directory, ShadowStore(tmp_path / "shadow.sqlite"))
    assert comp.compare(USER, "users", get("/api/users/1")) == []
    comp.store.flush()
    (entry,) = read_report(comp.store.path, str(USER))
    assert (entry["errors"], entry["compared"], entry["differing"]) == (1, 0, 0)
    assert "ConnectionError" in entry["last_error"]


def test_requests_outside_shadowed_endpoints_are_skipped(tmp_path, backends):
    client = mirror_client(comparator(tmp_path, backends, "users"))
    answer = client.get("/api/messages/1")
    assert (answer.status_code, answer.headers["X-Shadow"]) == (204, "skipped")
    assert client.get("/healthz").get_json()["status"] == "ok"


def test_the_store_of_bodies_and_answers_is_the_owners_only(tmp_path, backends):
    import requests
    from servers import serving

    comp = comparator(tmp_path / "run", backends, "broken").start()  # run/ is made by the store
    with serving(create_app(comparator=comp)) as base:
        marked = {"X-Strangler-Mirror": SECRET}
        assert requests.get(f"{base}/api/users/1", headers=marked, timeout=5).status_code == 204
        wait_compared(comp, str(USER), 1)
    comp.stop()
    for path in (tmp_path / "run", *(tmp_path / "run").iterdir()):
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is {oct(path.stat().st_mode & 0o777)}"


def served(comp: Comparator):
    """The comparator app over real HTTP (a thread); yields its URL."""
    import servers

    return servers.serving(create_app(comparator=comp))


def test_only_copies_marked_by_traefik_are_taken(tmp_path, backends):
    comp = comparator(tmp_path, backends, "users").start()
    with served(comp) as url:
        for headers in ({}, {"X-Strangler-Mirror": "guess"}, {"X-Strangler-Mirror": SECRET[:-1]}):
            answer = requests.get(f"{url}/api/users/1", headers=headers, timeout=5)
            assert answer.status_code == 403 and "only Traefik" in answer.json()["error"]
        assert requests.get(f"{url}/_shadow/stats", timeout=5).status_code == 403
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200  # the registry's check
        comp.store.flush()
        assert read_report(comp.store.path) == []  # nothing counted, nothing replayed
        assert backends["monolith"].hits == [] and backends["users"].hits == []
        marked = requests.get(f"{url}/api/users/1", headers={"X-Strangler-Mirror": SECRET}, timeout=5)
        assert marked.status_code == 204
        wait_compared(comp, str(USER), 1)
    comp.stop()


def test_a_comparator_that_knows_no_secret_refuses_everything(tmp_path, backends):
    directory = StaticDirectory({USER: "users"}, {name: [b.url] for name, b in backends.items()})
    comp = Comparator(directory, ShadowStore(tmp_path / "shadow.sqlite"))
    with served(comp) as url:
        for headers in ({}, {"X-Strangler-Mirror": ""}, {"X-Strangler-Mirror": "None"}):
            assert requests.get(f"{url}/api/users/1", headers=headers, timeout=5).status_code == 403


def test_bodies_over_the_limit_are_refused_whole_or_chunked(tmp_path, backends):
    comp = comparator(tmp_path, backends, "users", rules=lambda e: CompareRule(shadow_unsafe=True))
    marked = {"X-Strangler-Mirror": SECRET, "Content-Type": "application/json"}
    with served(comp) as url:
        big = b"x" * ((1 << 20) + 1)
        answer = requests.post(f"{url}/api/users", data=big, headers=marked, timeout=10)
        assert answer.status_code == 413 and "1048576 bytes" in answer.json()["error"]
        chunked = requests.post(f"{url}/api/users", data=iter([big[:600_000], big[600_000:]]),
                                headers=marked, timeout=10)
        assert chunked.status_code == 413
        fits = requests.post(f"{url}/api/users", data=b"x" * (1 << 20), headers=marked, timeout=10)
        assert fits.status_code == 204
    assert comp.queue.qsize() == 1  # only the copy within the limit


def test_credentials_are_redacted_in_what_is_stored_and_printed(tmp_path):
    def answer(path: str) -> dict:
        return {"id": 1, "nickname": "susan", "token": secrets.token_hex(8), "password_hash": "scrypt$abc"}

    candidate = Backend(lambda path: {**answer(path), "nickname": "SUSAN"})
    monolith = Backend(answer)
    try:
        directory = StaticDirectory({NEW: "users"}, {"monolith": [monolith.url], "users": [candidate.url]},
                                    secret=SECRET)
        comp = Comparator(directory, ShadowStore(tmp_path / "shadow.sqlite"),
                          lambda e: CompareRule(shadow_unsafe=True)).start()
        body = json.dumps({"nickname": "susan", "password": "hunter2-password"})
        with served(comp) as url:
            sent = requests.post(f"{url}/api/users?access_token=qtok-secret&x=1", data=body, timeout=5,
                                 headers={"X-Strangler-Mirror": SECRET, "Content-Type": "application/json",
                                          "Authorization": "Bearer eyJhbGciOi.jwt-secret.sig",
                                          "Cookie": "session=cookie-secret"})
            assert sent.status_code == 204
            wait_compared(comp, str(NEW), 1)
        comp.stop()
        # the replays still carried the user's credentials: only what is kept is redacted
        assert b"hunter2-password" in monolith.hits[0][2]
        stored = (tmp_path / "shadow.sqlite").read_bytes()
        for leaked in (b"hunter2-password", b"qtok-secret", b"jwt-secret", b"cookie-secret", b"scrypt$abc",
                       SECRET.encode()):
            assert leaked not in stored, leaked
        (example,) = read_report(tmp_path / "shadow.sqlite", str(NEW))[0]["examples"]
        assert json.loads(example["request"]["body"]) == {"nickname": "susan", "password": "[redacted]"}
        assert "access_token=%5Bredacted%5D" in example["request"]["target"] and "x=1" in example["request"]["target"]
        assert json.loads(example["candidate"]["body"])["token"] == "[redacted]"
        assert '"SUSAN"' in example["candidate"]["body"]  # the real difference is still shown
        from click.testing import CliRunner

        from strangler.cli import cli

        for args in ([], ["--json"]):
            printed = CliRunner().invoke(cli, ["diffs", *args, "--run-dir", str(tmp_path),
                                               "--plan", str(tmp_path / "none.toml")]).output
            assert "SUSAN" in printed
            for leaked in ("hunter2-password", "qtok-secret", "jwt-secret", "cookie-secret", "scrypt$abc"):
                assert leaked not in printed, (args, leaked)
    finally:
        candidate.stop()
        monolith.stop()


def test_noise_expires_so_a_later_real_difference_in_that_field_is_reported(tmp_path):
    from click.testing import CliRunner

    from strangler.cli import cli
    from strangler.shadow.noise import NoiseRule

    phase = {"now": "renaming", "calls": 0}

    def monolith(path: str) -> dict:
        phase["calls"] += 1  # renames racing the replays: the two monolith answers disagree
        renaming = phase["now"] == "renaming" and phase["calls"] % 2
        return {"id": 1, "nickname": "susanna" if renaming else "susan"}

    def service(path: str) -> dict:
        return {"id": 1, "nickname": "SUSAN" if phase["now"] == "diverged" else "susan"}

    made = {"monolith": Backend(monolith), "users": Backend(service)}
    comp = comparator(tmp_path, made, "users")
    comp.noise_rule = NoiseRule(size=20, max_age=600, min_rate=0.1, min_count=3)
    comp.start()
    client = mirror_client(comp)
    try:
        sent = 0
        for now, count in (("renaming", 10), ("settled", 20), ("diverged", 5)):
            phase["now"] = now
            for _ in range(count):  # one at a time: each replay sees its own phase
                assert client.get("/api/users/1").status_code == 204
                sent += 1
                wait_compared(comp, str(USER), sent)
            if now == "renaming":
                shown = CliRunner().invoke(cli, ["diffs", "--run-dir", str(tmp_path),
                                                 "--plan", str(tmp_path / "none.toml")]).output
                assert "nickname 100% (noise)" in shown, shown
        entry = wait_compared(comp, str(USER), sent)
    finally:
        comp.stop()
        for backend in made.values():
            backend.stop()
    assert (entry["compared"], entry["differing"]) == (35, 5)
    assert [(p["pattern"], p["count"]) for p in entry["patterns"]] == [("nickname", 5)]
    assert entry["noise"] == [] and entry["noise_rates"] == {}
