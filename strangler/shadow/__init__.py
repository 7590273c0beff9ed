"""The comparator: receives Traefik's mirrored copies and compares the candidate with the monolith.

``create_app()`` builds it from the environment (``STRANGLER_ETCD``,
``STRANGLER_PLAN``, ``STRANGLER_RUN_DIR``, ``STRANGLER_SHADOW_*``); a test
passes ``comparator=`` instead. Every mirrored request is answered 204 at
once and compared later (see :mod:`strangler.shadow.worker`); results go to
``<run_dir>/shadow.sqlite``; ``GET /_shadow/diffs`` serves them
(:mod:`strangler.shadow.report`) and ``strangler diffs`` prints them.
Documented in docs/shadow.md.

Only Traefik may send copies: each must carry ``X-Strangler-Mirror`` with
the secret stored in etcd's routing options (Traefik adds it on shadowed
routes), else 403 before its body is read; a body over
``STRANGLER_SHADOW_MAX_BODY`` bytes (default 1 MiB, what Traefik mirrors
at most) gets 413. What is stored and printed has credentials redacted
(:mod:`strangler.shadow.redact`).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from router.keys import MIRROR_HEADER, MIRROR_MAX_BODY
from router.release import instance_release
from strangler.shadow import metrics, report
from strangler.shadow.store import ShadowStore
from strangler.shadow.worker import Comparator, Mirrored

log = logging.getLogger(__name__)

DB_NAME = "shadow.sqlite"


def run_dir_from(env: Mapping[str, str]) -> Path:
    """The run dir: STRANGLER_RUN_DIR, else the parent of STRANGLER_DATA_DIR, else ``.strangler``."""
    if env.get("STRANGLER_RUN_DIR"):
        return Path(env["STRANGLER_RUN_DIR"])
    if env.get("STRANGLER_DATA_DIR"):
        return Path(env["STRANGLER_DATA_DIR"]).parent
    return Path(".strangler")


def comparator_from_env(env: Mapping[str, str] | None = None) -> Comparator:
    """Build (and start) the comparator the stack runs: etcd directory, the plan's rules, SQLite.

    Raises ValueError naming the variable when STRANGLER_ETCD is missing or a number is malformed.
    """
    from router.etcd import Etcd
    from strangler.shadow.directory import EtcdDirectory, PlanRules, plan_path

    env = os.environ if env is None else env
    if not env.get("STRANGLER_ETCD"):
        raise ValueError("set STRANGLER_ETCD: the comparator reads the shadowed routes from etcd")

    def number(name: str, default: str) -> int:
        raw = env.get(name, default)
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{name}={raw!r} must be a whole number >= 1")
        return int(raw)

    run_dir = run_dir_from(env)
    rules = PlanRules(lambda: plan_path(env, run_dir))
    directory = EtcdDirectory(Etcd(env["STRANGLER_ETCD"]), rules).start()
    store = ShadowStore(env.get("STRANGLER_SHADOW_DB") or run_dir / DB_NAME)
    return Comparator(directory, store, rules,
                      queue_size=number("STRANGLER_SHADOW_QUEUE", "1000"),
                      workers=number("STRANGLER_SHADOW_WORKERS", "4"),
                      sample=sample_from(env)).start()


def sample_from(env: Mapping[str, str]) -> float:
    """STRANGLER_SHADOW_SAMPLE: the share of copies compared (0 < share <= 1, default 1); ValueError naming it."""
    raw = env.get("STRANGLER_SHADOW_SAMPLE", "1")
    try:
        share = float(raw)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise ValueError(f"STRANGLER_SHADOW_SAMPLE={raw!r} must be a share above 0 and at most 1, e.g. 0.25")
    return share


def max_body_from(env: Mapping[str, str]) -> int:
    """STRANGLER_SHADOW_MAX_BODY (bytes, default MIRROR_MAX_BODY); ValueError naming it if malformed."""
    raw = env.get("STRANGLER_SHADOW_MAX_BODY", str(MIRROR_MAX_BODY))
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"STRANGLER_SHADOW_MAX_BODY={raw!r} must be a whole number of bytes >= 1")
    return int(raw)


def from_traefik(comparator: Comparator) -> bool:
    """True when the request carries the mirror secret Traefik adds (compared in constant time).

    A mark that does not match reads etcd again first (``reread``, when the
    directory has it: at most one read per 50 ms for marks that stay wrong),
    so copies marked with a secret stored since the last read are taken.
    """
    given = request.headers.get(MIRROR_HEADER, "").encode()

    def matches() -> bool:
        secret = comparator.directory.secret
        return bool(secret) and hmac.compare_digest(given, secret.encode())

    if matches():
        return True
    reread = getattr(comparator.directory, "reread", None)
    return bool(given and reread is not None and reread() and matches())


def read_body(limit: int) -> bytes:
    """The request's body; RequestEntityTooLarge when it is over ``limit`` bytes.

    A declared Content-Length is checked by Flask (MAX_CONTENT_LENGTH) before
    anything is read. A chunked body is read from the server's terminated
    stream up to one byte past the limit: Werkzeug's own limit would cut it
    short silently, and a truncated copy would be compared as if whole.
    """
    if request.content_length is not None or "wsgi.input_terminated" not in request.environ:
        return request.get_data(cache=False)
    stream, data = request.environ["wsgi.input"], bytearray()
    while len(data) <= limit:
        chunk = stream.read(limit + 1 - len(data))
        if not chunk:
            return bytes(data)
        data += chunk
    raise RequestEntityTooLarge()


def create_app(test_config: Mapping | None = None, comparator: Comparator | None = None) -> Flask:
    """The comparator's WSGI app; builds the comparator from the environment unless given one."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_body_from(os.environ)
    app.config.from_mapping(test_config or {})
    app.extensions["comparator"] = comparator or comparator_from_env()

    @app.before_request
    def only_traefik() -> Response | None:
        """Refuse (403) everything but the health check unless Traefik marked it, before reading a body."""
        if request.path in ("/healthz", metrics.PATH) or from_traefik(app.extensions["comparator"]):
            return None
        log.warning("refused %s %s from %s: no valid %s", request.method, request.path,
                    request.remote_addr, MIRROR_HEADER)
        return Response('{"error": "only Traefik may send mirrored copies here"}', status=403,
                        mimetype="application/json")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> Response:
        """413 for a copy over the body limit (Traefik does not mirror larger ones anyway)."""
        limit = app.config["MAX_CONTENT_LENGTH"]
        return Response(f'{{"error": "mirrored body over {limit} bytes"}}', status=413,
                        mimetype="application/json")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """A method no route takes (405) and the like: one line of JSON, not Werkzeug's HTML page."""
        what = f"{request.method} {request.path[:100]}: {exc.name}"
        return Response(json.dumps({"error": what}), status=exc.code or 500, mimetype="application/json")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        """A bug or a store that fails (SQLite locked too long): logged with its traceback here, one line out."""
        log.exception("comparator: %s %s failed", request.method, request.path)
        return Response(json.dumps({"error": f"the comparator failed on this request ({type(exc).__name__}); "
                                             "see its log"}), status=500, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        """Health check for the registry and Traefik (anyone): 200 while the comparator runs."""
        return jsonify(status="ok", queued=app.extensions["comparator"].queue.qsize(),
                       release=instance_release())

    @app.get("/_shadow/stats")
    def stats() -> Response:
        """Counters not yet written to SQLite, and the queue length (tests, benchmarks)."""
        comparator = app.extensions["comparator"]
        return jsonify(queued=comparator.queue.qsize(), pending=comparator.store.snapshot())

    metrics.init_app(app)  # GET /_shadow/metrics: strangler/shadow/metrics.py
    report.init_app(app)  # GET /_shadow/diffs (mirror secret): strangler/shadow/report.py

    @app.route("/", defaults={"path": ""}, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    @app.route("/<path:path>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    def mirrored(path: str) -> Response:
        """A copy Traefik mirrored (Traefik discards the answer): queued for comparison, 204 at once."""
        item = Mirrored(
            method=request.method,
            path=request.path,
            query=request.query_string.decode("latin-1"),
            headers=tuple(request.headers.items()),
            body=read_body(app.config["MAX_CONTENT_LENGTH"]),
        )
        outcome = app.extensions["comparator"].submit(item)
        return Response(status=204, headers={"X-Shadow": outcome})

    return app
