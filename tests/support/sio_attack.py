"""Hostile and malformed Engine.IO / Socket.IO traffic against a real server, bounded in count and time.

:func:`attack` runs a mix of sequences (each a handful of requests) from a
small thread pool and returns, per request, how long the server took to
answer, or that it did not answer within :data:`REQUEST_TIMEOUT`. Every
sequence targets the loopback server it is given and closes what it opens.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
import websocket

REQUEST_TIMEOUT = 10.0
POLLING = "/socket.io/?EIO=4&transport=polling"
BIG = 1_100_000  # over Engine.IO's default max_http_buffer_size (1 MB)


@dataclass
class Answer:
    """One hostile request: what it was, its status (or the error), and the seconds it took."""

    what: str
    status: int | str
    seconds: float


class Attacker:
    """Sends one sequence's requests to *base*, timing each."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.ws_base = "ws" + base[len("http"):]
        self.http = requests.Session()
        self.answers: list[Answer] = []

    def _timed(self, what: str, call: Callable[[], int | str]) -> int | str:
        start = time.monotonic()
        try:
            status = call()
        except (requests.RequestException, websocket.WebSocketException, OSError) as exc:
            status = type(exc).__name__
        self.answers.append(Answer(what, status, time.monotonic() - start))
        return status

    def get(self, query: str) -> requests.Response | None:
        """GET ``/socket.io/`` with *query*; the response, or None if it did not answer."""
        box: list[requests.Response] = []

        def call() -> int:
            box.append(self.http.get(f"{self.base}/socket.io/?{query}", timeout=REQUEST_TIMEOUT))
            return box[-1].status_code

        self._timed(f"GET {query[:40]}", call)
        return box[0] if box else None

    def post(self, query: str, body: bytes | str) -> int | str:
        """POST *body* to ``/socket.io/`` with *query*; its status or the error's name."""
        shown = body[:20] if len(body) <= 20 else f"{body[:12]!r}...({len(body)})"
        return self._timed(f"POST {shown!r}", lambda: self.http.post(
            f"{self.base}/socket.io/?{query}", data=body, timeout=REQUEST_TIMEOUT).status_code)

    def open_session(self) -> str | None:
        """Handshake over polling; the new session id, or None."""
        answer = self.get("EIO=4&transport=polling")
        if answer is None or answer.status_code != 200 or not answer.text.startswith("0"):
            return None
        return json.loads(answer.text[1:])["sid"]

    def polling(self, *bodies: bytes | str, connect: bool = True, poll_after: bool = False) -> None:
        """Open a session, POST ``40`` (if *connect*) then each of *bodies*; poll once after."""
        sid = self.open_session()
        if sid is None:
            return
        query = f"EIO=4&transport=polling&sid={sid}"
        if connect:
            self.post(query, "40")
        for body in bodies:
            self.post(query, body)
        if poll_after:
            self.get(query)  # the session is closed by now: answered at once, never a long poll

    def websocket(self, *frames: bytes | str, connect: bool = True) -> None:
        """Open a websocket session, send ``40`` (if *connect*) then *frames*, then hang up."""

        def call() -> int:
            ws = websocket.create_connection(
                f"{self.ws_base}/socket.io/?EIO=4&transport=websocket", timeout=REQUEST_TIMEOUT)
            try:
                ws.recv()  # the open packet
                for frame in (["40"] if connect else []) + list(frames):
                    if isinstance(frame, bytes):
                        ws.send_binary(frame)
                    else:
                        ws.send(frame)
            finally:
                ws.close(timeout=2)
            return 101

        self._timed(f"WS {[f[:12] for f in frames]!r}", call)


def _sequences() -> list[Callable[[Attacker], None]]:
    """Every hostile sequence, once each; :func:`attack` cycles through them."""
    return [
        lambda a: a.polling("9"),                      # unknown Engine.IO packet type
        lambda a: a.polling("4" + "x" * BIG),          # over the body limit
        lambda a: a.polling("2"),                      # a PING, which only servers send
        lambda a: a.polling("6"),                      # a NOOP from the client
        lambda a: a.polling("9", connect=False),       # refused before the namespace connect
        lambda a: a.polling("40\x1e9"),                # a good and a bad packet in one payload
        lambda a: a.polling(""),                       # an empty payload
        lambda a: a.polling(b"\xff\xfe\xfd"),          # not UTF-8
        lambda a: a.polling("b!!not-base64"),          # a broken binary packet
        lambda a: a.polling("4{", "49", "42[", '42["post_message",'),  # broken Socket.IO packets
        lambda a: a.polling('451-["post_message",{"_placeholder":true,"num":0}]', "9"),
        lambda a: a.polling('40{"token":' + "[" * 5000),  # deep nesting in the connect data
        lambda a: a.polling('42["ping_user",1]\x1e' * 200 + "9"),  # many events, then a bad one
        lambda a: a.polling("5", "9"),                 # an UPGRADE over polling, then a bad packet
        lambda a: a.polling("1", "9", poll_after=True),  # a CLOSE, then more on the closed session
        lambda a: a.get("EIO=3&transport=polling"),
        lambda a: a.get("EIO=4&transport=carrier-pigeon"),
        lambda a: a.get("EIO=4&transport=polling&j=x"),
        lambda a: a.get("EIO=4&transport=polling&sid=nope"),
        lambda a: a.post("EIO=4&transport=polling&sid=nope", "40"),
        lambda a: a.websocket("9"),
        lambda a: a.websocket("4" + "x" * BIG),
        lambda a: a.websocket(b"\x00\xff\x10", "42[", '42["post_message",{"source":1}]'),
        lambda a: a.websocket("2probe", connect=False),  # an upgrade probe on a fresh socket
    ]


def attack(base: str, count: int = 200, concurrency: int = 16) -> list[Answer]:
    """Run *count* hostile sequences against *base*, *concurrency* at a time; every request's answer.

    Once a request goes unanswered the server is taken to be down and no
    further sequence starts, so a failing run ends in seconds, not minutes.
    """
    sequences = _sequences()
    server_down = threading.Event()

    def run(n: int) -> list[Answer]:
        if server_down.is_set():
            return []
        attacker = Attacker(base)
        try:
            sequences[n % len(sequences)](attacker)
        finally:
            attacker.http.close()
        if any(not isinstance(answer.status, int) for answer in attacker.answers):
            server_down.set()
        return attacker.answers

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return [answer for answers in pool.map(run, range(count)) for answer in answers]


def busy_free_round_trip(base: str, threads: int, token: str, timeout: float = 10.0) -> float:
    """Hold every one of the server's *threads*, then time a chat round trip; return its seconds.

    A websocket holds its server thread while open, so *threads* connected
    clients prove that many threads are free (a thread still stuck in a
    hostile request leaves the last client unable to connect). The first
    client then posts a message with *token*; the clock stops when every
    client has received its ``updated_model`` push.
    """
    from servers import Listener

    clients: list[Listener] = []
    try:
        for _ in range(threads):
            clients.append(Listener(base, timeout=timeout))
        source = f"round trip {time.monotonic_ns()}"
        start = time.monotonic()
        posted = clients[0].call("post_message", {"source": source}, token)
        assert "error" not in posted, posted
        for client in clients:
            client.wait_for(lambda e: e.get("class") == "Message"
                            and e["model"]["source"] == source, timeout=timeout)
        return time.monotonic() - start
    finally:
        for client in clients:
            client.close()


def check_survives(base: str, threads: int, token: str, count: int = 200) -> dict[str, float]:
    """Attack *base* with *count* sequences; assert it stayed whole; return the figures measured.

    Every hostile request must be answered, none with a 5xx, each within 5 s
    (the guard's close wait is 1 s); afterwards ``/healthz`` and a chat round
    trip with all *threads* held must each take under 1 s.
    """
    start = time.monotonic()
    answers = attack(base, count=count, concurrency=threads)
    attack_seconds = time.monotonic() - start
    unanswered = [a for a in answers if not isinstance(a.status, int)]
    assert not unanswered, f"{len(unanswered)} hostile requests unanswered, e.g. {unanswered[0]}"
    assert [a for a in answers if a.status >= 500] == []
    slowest = max(answers, key=lambda a: a.seconds)
    assert slowest.seconds < 5, slowest
    start = time.monotonic()
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    healthz_seconds = time.monotonic() - start
    assert healthz_seconds < 1
    round_trip = busy_free_round_trip(base, threads, token)
    assert round_trip < 1
    return {"requests": len(answers), "attack_s": attack_seconds, "slowest_s": slowest.seconds,
            "healthz_s": healthz_seconds, "round_trip_s": round_trip}
