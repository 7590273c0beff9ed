"""A thin client for etcd v3, the store behind the routing layer.

Everything etcd3gw-specific (base64 keys, the JSON gateway's string-encoded
integers, its exception types) stays in this module; callers deal in plain
``str`` keys and values and in the exceptions defined here.

Authentication: with a user (given, or ``STRANGLER_ETCD_USER`` and
``STRANGLER_ETCD_PASSWORD`` in the environment), the client asks the
gateway's ``auth/authenticate`` for a token and sends it with every request,
asking again once when etcd says the token is no longer valid. Every
client of ours builds its ``Etcd`` here, so each takes its credentials from
its environment (docker-compose.yml sets them; docker/etcd-auth.sh makes the
users).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import requests
from etcd3gw import exceptions as gw_exceptions
from etcd3gw.client import Etcd3Client

DEFAULT_URL = "http://127.0.0.1:2379"
USER_ENV = "STRANGLER_ETCD_USER"
PASSWORD_ENV = "STRANGLER_ETCD_PASSWORD"
# What etcd answers when a token it handed out is no longer good (expired, or etcd restarted).
_STALE_TOKEN = ("invalid auth token", "auth token is expired")


class EtcdError(Exception):
    """etcd answered, but refused the request."""


class EtcdAuthError(EtcdError):
    """etcd wants credentials, or refused the ones given, or the user lacks a permission."""


class EtcdUnavailable(EtcdError):
    """etcd could not be reached (refused, timed out, or not an etcd)."""


class TxnTooLarge(EtcdError):
    """A transaction had more operations than etcd's --max-txn-ops allows."""


class RevisionCompacted(EtcdError):
    """A read asked for a revision etcd no longer keeps (compacted away)."""


class Entry(NamedTuple):
    """One key as etcd stores it: its value and its revisions."""

    value: str
    mod_revision: int
    create_revision: int
    lease: int


class Compare(NamedTuple):
    """Transaction guard: `key` was last modified at `mod_revision`.

    ``mod_revision == 0`` means the key must not exist.
    """

    key: str
    mod_revision: int


class Put(NamedTuple):
    """Transaction operation: set `key` to `value`, optionally bound to a lease."""

    key: str
    value: str
    lease: Lease | int | None = None


def _b64(text: str | bytes) -> str:
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8")


def _prefix_end(prefix: str) -> bytes:
    """The first key after every key starting with `prefix` (etcd's range_end)."""
    raw = bytearray(prefix.encode("utf-8"))
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"  # etcd: range_end "\0" means "to the end of the keyspace"
    raw[-1] += 1
    return bytes(raw)


class Lease:
    """An etcd lease: keys put with it vanish when it expires or is revoked."""

    def __init__(self, etcd: Etcd, lease_id: int, ttl: int) -> None:
        self._etcd = etcd
        self.id = lease_id
        self.ttl = ttl

    def refresh(self) -> int:
        """Keep the lease alive for another TTL; returns the new TTL, -1 if it expired."""
        result = self._etcd._post("lease/keepalive", {"ID": self.id})
        return int(result.get("result", {}).get("TTL", -1))

    def revoke(self) -> None:
        """End the lease now, deleting every key bound to it."""
        self._etcd._post("kv/lease/revoke", {"ID": self.id})

    def __repr__(self) -> str:
        return f"Lease(id={self.id}, ttl={self.ttl})"


class Etcd:
    """A connection to one etcd endpoint through its v3 JSON gateway.

    Any caller may use it; it holds no state but the URL and an HTTP session,
    so one instance can be shared by threads.
    """

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 5.0, *,
                 user: str | None = None, password: str | None = None) -> None:
        """``user``/``password`` None: ``STRANGLER_ETCD_USER`` / ``STRANGLER_ETCD_PASSWORD``
        (no user: no authentication). Credentials in the URL are refused: they would end
        up in command lines and logs."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if not parts.hostname:
            raise ValueError(f"etcd URL {url!r} has no host; use e.g. {DEFAULT_URL}")
        if parts.username or parts.password:
            raise ValueError(f"put etcd credentials in {USER_ENV} and {PASSWORD_ENV}, not in the URL")
        self.url = f"{parts.scheme}://{parts.hostname}:{parts.port or 2379}"
        self.timeout = timeout
        if user is None:
            user, password = os.environ.get(USER_ENV) or None, os.environ.get(PASSWORD_ENV)
        self.user = user
        self._password = password or ""
        self._token_lock = threading.Lock()
        self._client = Etcd3Client(
            host=parts.hostname,
            port=parts.port or 2379,
            protocol=parts.scheme,
            timeout=timeout,
            api_path="/v3/",
        )

    @classmethod
    def connect(cls, url: str = DEFAULT_URL, timeout: float = 5.0, wait: float = 0.0, *,
                user: str | None = None, password: str | None = None) -> Etcd:
        """Connect to etcd at `url` (credentials as for the constructor) and check it answers.

        Keeps trying for up to `wait` seconds (for a just-started etcd);
        raises EtcdUnavailable if it still does not answer, EtcdAuthError
        when it refuses the credentials.
        """
        etcd = cls(url, timeout=timeout, user=user, password=password)
        deadline = time.monotonic() + wait
        while True:
            try:
                etcd.revision()
                return etcd
            except EtcdUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    # -- transport ---------------------------------------------------------

    def _unavailable(self) -> EtcdUnavailable:
        return EtcdUnavailable(
            f"etcd at {self.url} is not answering: start it with `strangler up` or pass --etcd"
        )

    def _post(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        if self.user and "Authorization" not in self._client.session.headers:
            self._authenticate()
        try:
            return self._send(path, payload)
        except EtcdAuthError as exc:
            if not self.user or not any(why in str(exc) for why in _STALE_TOKEN):
                raise
        self._authenticate()  # the token went stale: one fresh one, one more try
        return self._send(path, payload)

    def _authenticate(self) -> None:
        """Trade the user and password for a token, sent with every later request."""
        with self._token_lock:
            self._client.session.headers.pop("Authorization", None)
            try:
                result = self._send("auth/authenticate", {"name": self.user, "password": self._password})
            except EtcdAuthError as exc:
                raise EtcdAuthError(
                    f"etcd at {self.url} refused user {self.user!r}: wrong user or password "
                    f"(check {USER_ENV} and {PASSWORD_ENV})") from exc
            except EtcdError as exc:
                if "authentication is not enabled" not in str(exc):
                    raise
                return  # an etcd without auth takes the requests as they are
            self._client.session.headers["Authorization"] = str(result["token"])

    def _send(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._client.post(self._client.get_url(path), json=payload)
        except (
            gw_exceptions.ConnectionFailedError,
            gw_exceptions.ConnectionTimeoutError,
            requests.RequestException,
        ) as exc:
            raise self._unavailable() from exc
        except gw_exceptions.Etcd3Exception as exc:
            raise self._refused(exc) from exc

    def _refused(self, exc: gw_exceptions.Etcd3Exception) -> EtcdError:
        detail = str(exc.detail_text or exc)
        try:  # the gateway answers errors as JSON; keep only its message
            detail = str(json.loads(detail).get("message", detail))
        except (ValueError, AttributeError):
            pass
        if "too many operations in txn" in detail:
            return TxnTooLarge(
                "the change needs more operations than etcd allows in one transaction: "
                "restart etcd with a higher --max-txn-ops (strangler up passes 20000)"
            )
        if "compacted" in detail:
            return RevisionCompacted(f"etcd at {self.url} no longer keeps that revision")
        if "user name is empty" in detail:
            return EtcdAuthError(f"etcd at {self.url} requires authentication: set {USER_ENV} and {PASSWORD_ENV}")
        if "permission denied" in detail:
            return EtcdAuthError(f"etcd at {self.url} refused user {self.user!r} that permission "
                                 "(see docker/etcd-auth.sh for the roles)")
        if any(why in detail for why in (*_STALE_TOKEN, "authentication failed")):
            return EtcdAuthError(f"etcd at {self.url}: {detail.removeprefix('etcdserver: ')}")
        detail = " ".join(detail.split())
        return EtcdError(f"etcd at {self.url} refused the request: {detail}")

    # -- reads -------------------------------------------------------------

    def _range(
        self, key: str, range_end: bytes | None = None, revision: int | None = None
    ) -> tuple[dict[str, Entry], int]:
        # etcd spells "from the first key" as the key "\0"
        payload: dict[str, Any] = {"key": _b64(key or "\0")}
        if range_end is not None:
            payload["range_end"] = _b64(range_end)
        if revision is not None:
            payload["revision"] = revision
        result = self._post("kv/range", payload)
        entries = {
            _unb64(kv["key"]): Entry(
                value=_unb64(kv.get("value", "")),
                mod_revision=int(kv.get("mod_revision", 0)),
                create_revision=int(kv.get("create_revision", 0)),
                lease=int(kv.get("lease", 0)),
            )
            for kv in result.get("kvs", [])
        }
        return entries, int(result["header"]["revision"])

    def revision(self) -> int:
        """The store's current revision (also a cheap "is etcd up?" check).

        Read from the member's status, which needs no read permission on any
        key, so it works for every user once auth is on.
        """
        return int(self._post("maintenance/status", {})["header"]["revision"])

    def get(self, key: str) -> str | None:
        """The value of `key`, or None when it does not exist."""
        entry = self.get_entry(key)
        return entry.value if entry else None

    def get_entry(self, key: str, revision: int | None = None) -> Entry | None:
        """`key` with its revisions (as of `revision`, default now), or None."""
        return self._range(key, revision=revision)[0].get(key)

    def get_prefix(self, prefix: str) -> tuple[dict[str, str], int]:
        """Every key under `prefix` with its value, and the store revision of the read."""
        entries, revision = self._range(prefix, _prefix_end(prefix))
        return {k: e.value for k, e in entries.items()}, revision

    def get_prefix_entries(
        self, prefix: str, revision: int | None = None
    ) -> tuple[dict[str, Entry], int]:
        """Like get_prefix, with revisions per key, optionally as of an older `revision`.

        Reading several prefixes at the revision returned by the first read
        gives one consistent snapshot.
        """
        return self._range(prefix, _prefix_end(prefix), revision)

    def get_prefix_at(self, prefix: str, revision: int) -> dict[str, str]:
        """Every key under `prefix` as it was at store revision `revision`."""
        entries, _ = self._range(prefix, _prefix_end(prefix), revision)
        return {k: e.value for k, e in entries.items()}

    # -- writes ------------------------------------------------------------

    def put(self, key: str, value: str, lease: Lease | int | None = None) -> int:
        """Set `key` to `value` (bound to `lease` if given); returns the new revision."""
        payload: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        lease_id = lease.id if isinstance(lease, Lease) else lease
        if lease_id:
            payload["lease"] = lease_id
        return int(self._post("kv/put", payload)["header"]["revision"])

    def delete(self, key: str) -> bool:
        """Delete `key`; True if it existed."""
        return int(self._post("kv/deleterange", {"key": _b64(key)}).get("deleted", 0)) > 0

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under `prefix`; returns how many were deleted."""
        payload = {"key": _b64(prefix or "\0"), "range_end": _b64(_prefix_end(prefix))}
        return int(self._post("kv/deleterange", payload).get("deleted", 0))

    def txn(
        self,
        compares: Iterable[Compare | tuple[str, int]] = (),
        puts: Iterable[Put | tuple[str, str]] | Mapping[str, str] = (),
        deletes: Iterable[str] = (),
    ) -> bool:
        """Apply `puts` and `deletes` atomically if every compare holds.

        Returns False (and writes nothing) when a compare fails. A key may
        appear only once across puts and deletes (etcd's rule).
        Raises TxnTooLarge when etcd's --max-txn-ops is too low for it.
        """
        return self.txn_revision(compares, puts, deletes) is not None

    def txn_revision(
        self,
        compares: Iterable[Compare | tuple[str, int]] = (),
        puts: Iterable[Put | tuple[str, str]] | Mapping[str, str] = (),
        deletes: Iterable[str] = (),
    ) -> int | None:
        """Like txn, but returns the store revision the transaction wrote, or None."""
        if isinstance(puts, Mapping):
            puts = list(puts.items())
        compare_ops = [
            {
                "key": _b64(key),
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": int(mod_revision),
            }
            for key, mod_revision in compares
        ]
        success: list[dict[str, Any]] = []
        for put in puts:
            put = Put(*put)
            op: dict[str, Any] = {"key": _b64(put.key), "value": _b64(put.value)}
            lease_id = put.lease.id if isinstance(put.lease, Lease) else put.lease
            if lease_id:
                op["lease"] = lease_id
            success.append({"request_put": op})
        success.extend({"request_delete_range": {"key": _b64(key)}} for key in deletes)
        result = self._post("kv/txn", {"compare": compare_ops, "success": success, "failure": []})
        if not result.get("succeeded", False):
            return None
        return int(result["header"]["revision"])

    # -- leases ------------------------------------------------------------

    def lease(self, ttl: int) -> Lease:
        """Grant a lease of `ttl` seconds; keep it with refresh(), end it with revoke()."""
        result = self._post("lease/grant", {"TTL": int(ttl), "ID": 0})
        return Lease(self, int(result["ID"]), int(result.get("TTL", ttl)))

    def __repr__(self) -> str:
        return f"Etcd({self.url!r})"
