"""A thin client for etcd v3, the store behind the routing layer.

It speaks etcd's v3 JSON gateway (``router.etcd_members`` carries the
requests). Everything the gateway spells its own way (base64 keys and values,
integers as strings, errors as JSON) stays in this module; callers deal in
plain ``str`` keys and values and in the exceptions defined here.

Several members: ``Etcd("http://a:2379,http://b:2379")`` or
``Etcd(endpoints=[...])`` takes a cluster's client URLs and tries them in
turn when one is down or times out; a member that failed is passed over for
a few seconds and then preferred again, so a member that comes back is used
again. Reads, lease grants and keep-alives go to any member. Writes move on
to another member only when etcd certainly did not act on them; what a
transaction does when that is unclear is explained at ``Etcd._settle``.

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
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from router.etcd_members import DEFAULT_URL, Members, NotSent, Unsure, parse_endpoints

USER_ENV = "STRANGLER_ETCD_USER"
PASSWORD_ENV = "STRANGLER_ETCD_PASSWORD"
# What etcd answers when a token it handed out is no longer good (expired, or etcd restarted).
_STALE_TOKEN = ("invalid auth token", "auth token is expired")


class EtcdError(Exception):
    """etcd answered, but refused the request."""


class EtcdAuthError(EtcdError):
    """etcd wants credentials, or refused the ones given, or the user lacks a permission."""


class EtcdUnavailable(EtcdError):
    """No member of etcd could be reached (refused, timed out, or not an etcd)."""


class OutcomeUnknown(EtcdUnavailable):
    """A write reached a member that failed before answering: it may or may not have applied."""


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

    def revoke(self) -> bool:
        """End the lease now, deleting every key bound to it; a lease already gone counts as ended.

        Returns False when etcd found no such lease (it had expired, someone
        else revoked it, or a revoke sent again on another member after the
        first one's member failed mid-request found it gone), True otherwise.
        """
        try:
            self._etcd._post("kv/lease/revoke", {"ID": self.id})
        except EtcdError as exc:
            if "lease not found" not in str(exc):
                raise
            return False
        return True

    def __repr__(self) -> str:
        return f"Lease(id={self.id}, ttl={self.ttl})"


class Etcd:
    """A client of one etcd cluster (one member or several) through its v3 JSON gateway.

    Any caller may use it, and one instance can be shared by threads: it
    holds the members' URLs, a keep-alive pool per member, which members
    failed lately, and the auth token.
    """

    def __init__(self, url: str | Iterable[str] | None = None, timeout: float = 5.0, *,
                 endpoints: str | Iterable[str] | None = None,
                 user: str | None = None, password: str | None = None) -> None:
        """``url`` (or ``endpoints``): one member's URL, several comma-separated, or a list.

        ``timeout`` bounds each request to one member; a call tries each member at most once.
        ``user``/``password`` None: ``STRANGLER_ETCD_USER`` / ``STRANGLER_ETCD_PASSWORD``
        (no user: no authentication). Credentials in a URL are refused: they would end
        up in command lines and logs.
        """
        if url is not None and endpoints is not None:
            raise ValueError("give etcd's URLs once: url or endpoints, not both")
        given = endpoints if endpoints is not None else url if url is not None else DEFAULT_URL
        self.urls = parse_endpoints(given, credentials_hint=f"{USER_ENV} and {PASSWORD_ENV}")
        self.url = ",".join(self.urls)  # what STRANGLER_ETCD / --etcd take back
        self.timeout = timeout
        if user is None:
            user, password = os.environ.get(USER_ENV) or None, os.environ.get(PASSWORD_ENV)
        self.user = user
        self._password = password or ""
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self._members = Members(self.urls, timeout)

    @classmethod
    def connect(cls, url: str | Iterable[str] = DEFAULT_URL, timeout: float = 5.0,
                wait: float = 0.0, *, user: str | None = None,
                password: str | None = None) -> Etcd:
        """Connect to etcd at `url` (one or several members, as for the constructor) and check it answers.

        Keeps trying for up to `wait` seconds (for a just-started etcd);
        raises EtcdUnavailable if no member answers, EtcdAuthError
        when etcd refuses the credentials.
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

    @property
    def current(self) -> str:
        """The member that answered last (the first one until any did)."""
        return self._members.last

    # -- transport ---------------------------------------------------------

    def _unavailable(self) -> EtcdUnavailable:
        return EtcdUnavailable(
            f"etcd at {self.url} is not answering: start it with `strangler up` or pass --etcd"
        )

    def _post(self, path: str, payload: Mapping[str, Any], *,
              idempotent: bool = True) -> dict[str, Any]:
        """One gateway call, through any member; see _call for `idempotent`."""
        if self.user and self._token is None:
            self._authenticate()
        try:
            return self._call(path, payload, idempotent=idempotent)
        except EtcdAuthError as exc:
            if not self.user or not any(why in str(exc) for why in _STALE_TOKEN):
                raise
        self._authenticate()  # the token went stale: one fresh one, one more try
        return self._call(path, payload, idempotent=idempotent)

    def _call(self, path: str, payload: Mapping[str, Any], *, idempotent: bool,
              token: bool = True) -> dict[str, Any]:
        """Send to the members in turn until one answers; each is tried at most once.

        A request that never reached etcd moves on to the next member. One that
        reached a member which failed before answering moves on only if it is
        `idempotent` (a read, a lease grant or keep-alive: doing it twice is
        harmless); a write raises OutcomeUnknown instead, for the caller to settle.
        """
        headers = {"Authorization": self._token} if token and self._token else {}
        for url in self._members.order():
            try:
                status, body = self._members.post(url, path, payload, headers)
            except NotSent:
                continue
            except Unsure as exc:
                if idempotent:
                    continue
                raise OutcomeUnknown(
                    f"etcd at {url} failed before answering ({exc}); "
                    "the write may or may not have applied") from exc
            if status == 200 and isinstance(body, dict):
                return body
            raise self._refused(url, body)
        raise self._unavailable()

    def _authenticate(self) -> None:
        """Trade the user and password for a token, sent with every later request."""
        with self._token_lock:
            self._token = None
            try:
                result = self._call("auth/authenticate",
                                    {"name": self.user, "password": self._password},
                                    idempotent=True, token=False)
            except EtcdAuthError as exc:
                raise EtcdAuthError(
                    f"etcd at {self.url} refused user {self.user!r}: wrong user or password "
                    f"(check {USER_ENV} and {PASSWORD_ENV})") from exc
            except EtcdError as exc:
                if "authentication is not enabled" not in str(exc):
                    raise
                self._token = ""  # an etcd without auth takes the requests as they are
                return
            self._token = str(result["token"])

    def _refused(self, url: str, body: Any) -> EtcdError:
        detail = str(body.get("message") or body) if isinstance(body, dict) else str(body)
        if "too many operations in txn" in detail:
            return TxnTooLarge(
                "the change needs more operations than etcd allows in one transaction: "
                "restart etcd with a higher --max-txn-ops (strangler up passes 20000)"
            )
        if "compacted" in detail:
            return RevisionCompacted(f"etcd at {url} no longer keeps that revision")
        if "user name is empty" in detail:
            return EtcdAuthError(f"etcd at {url} requires authentication: set {USER_ENV} and {PASSWORD_ENV}")
        if "permission denied" in detail:
            return EtcdAuthError(f"etcd at {url} refused user {self.user!r} that permission "
                                 "(see docker/etcd-auth.sh for the roles)")
        if any(why in detail for why in (*_STALE_TOKEN, "authentication failed")):
            return EtcdAuthError(f"etcd at {url}: {detail.removeprefix('etcdserver: ')}")
        detail = " ".join(detail.split())
        return EtcdError(f"etcd at {url} refused the request: {detail}")

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
        return _entries(result.get("kvs", [])), int(result["header"]["revision"])

    def snapshot(self, prefixes: Iterable[str] = (), keys: Iterable[str] = (),
                 revision: int | None = None) -> tuple[dict[str, Entry], int]:
        """Every key under each of ``prefixes``, and each of ``keys`` that exists, in ONE request.

        The reads are one transaction of range requests, so they see one
        revision (returned; with ``revision``, they read as of then): a
        consistent snapshot of a few scattered places for the price of one call.
        """
        ranges: list[dict[str, Any]] = [
            {"key": _b64(prefix or "\0"), "range_end": _b64(_prefix_end(prefix))} for prefix in prefixes
        ] + [{"key": _b64(key)} for key in keys]
        if revision is not None:
            for request in ranges:
                request["revision"] = revision
        result = self._post("kv/txn", {"compare": [], "success": [{"request_range": r} for r in ranges],
                                       "failure": []})
        found: dict[str, Entry] = {}
        for response in result.get("responses", []):
            found |= _entries(response.get("response_range", {}).get("kvs", []))
        return found, int(result["header"]["revision"])

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
        return int(self._post("kv/put", payload, idempotent=False)["header"]["revision"])

    def delete(self, key: str) -> bool:
        """Delete `key`; True if it existed."""
        deleted = self._post("kv/deleterange", {"key": _b64(key)}, idempotent=False)
        return int(deleted.get("deleted", 0)) > 0

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under `prefix`; returns how many were deleted."""
        payload = {"key": _b64(prefix or "\0"), "range_end": _b64(_prefix_end(prefix))}
        return int(self._post("kv/deleterange", payload, idempotent=False).get("deleted", 0))

    def txn(
        self,
        compares: Iterable[Compare | tuple[str, int]] = (),
        puts: Iterable[Put | tuple[str, str]] | Mapping[str, str] = (),
        deletes: Iterable[str] = (),
    ) -> bool:
        """Apply `puts` and `deletes` atomically if every compare holds.

        Returns False (and writes nothing) when a compare fails. A key may
        appear only once across puts and deletes (etcd's rule).
        Raises TxnTooLarge when etcd's --max-txn-ops is too low for it, and
        OutcomeUnknown when a member failed mid-request and even _settle cannot tell.
        """
        return self.txn_revision(compares, puts, deletes) is not None

    def txn_revision(
        self,
        compares: Iterable[Compare | tuple[str, int]] = (),
        puts: Iterable[Put | tuple[str, str]] | Mapping[str, str] = (),
        deletes: Iterable[str] = (),
    ) -> int | None:
        """Like txn, but returns the store revision the transaction wrote, or None."""
        compares = [Compare(*compare) for compare in compares]
        puts = [Put(*put) for put in (puts.items() if isinstance(puts, Mapping) else puts)]
        deletes = list(deletes)
        payload = _txn_payload(compares, puts, deletes)
        try:
            return self._txn_once(payload)
        except OutcomeUnknown as lost:
            return self._settle(compares, puts, deletes, payload, lost)

    def _txn_once(self, payload: Mapping[str, Any]) -> int | None:
        result = self._post("kv/txn", payload, idempotent=False)
        if not result.get("succeeded", False):
            return None
        return int(result["header"]["revision"])

    def _settle(self, compares: list[Compare], puts: list[Put], deletes: list[str],
                payload: Mapping[str, Any], lost: OutcomeUnknown) -> int | None:
        """A transaction reached a member that failed before answering: did it apply?

        The rule. A transaction is sent again only when it is certain it did
        not apply, and it can tell only when it is *guarded*: one of its
        compares is on the mod revision of a key it also writes (every
        transaction of the route table and of the revocation store is). Then:

        - read the compared keys, now through another member. If every compare
          still holds, the transaction has not applied (it would have moved the
          guarded key: a mod revision never goes back): send it once more.
          Should the lost copy still apply later (its member had already
          proposed it to the cluster), the two copies race on the same compare;
          whichever applies first moves the guarded key and the other's compare
          fails. So it applies once at most, and if the resent copy loses that
          race, the next point tells whether the winner was ours.
          (A guard that wants its key absent, mod revision 0, proves this only
          if nobody deletes the key within seconds of its creation: true of
          ours, the route table's guard is never deleted and a revocation lives
          for a token's lifetime. A guard on an existing key is preferred.)
        - a compare no longer holds: the guarded key moved, by our transaction or
          by someone else's. Ours applied exactly when the write that first moved
          the guarded key past the compared revision wrote our values: find that
          revision from a key we put that still holds our value, and check the
          guard just before it and at it, and every key we put at it. Then that
          revision is returned as if the first answer had come; otherwise None,
          the usual "someone else changed it first" (also when every key we put
          was overwritten since: then newer writes stand over ours anyway).

        Anything else (an unguarded transaction, or etcd unreachable while
        settling) raises OutcomeUnknown.
        """
        written = {put.key for put in puts} | set(deletes)
        guards = sorted((c for c in compares if c.key in written), key=lambda c: c.mod_revision == 0)
        if not guards or not puts:
            raise lost
        guard = guards[0]
        try:
            if all(self._holds(compare) for compare in compares):
                resent = self._txn_once(payload)
                if resent is not None:
                    return resent
            return self._applied_at(guard, puts, deletes)
        except OutcomeUnknown:
            raise
        except EtcdUnavailable as exc:
            raise OutcomeUnknown(f"{lost}; and no member answered to tell which") from exc

    def _holds(self, compare: Compare) -> bool:
        entry = self.get_entry(compare.key)
        return (entry.mod_revision if entry else 0) == compare.mod_revision

    def _applied_at(self, guard: Compare, puts: list[Put], deletes: list[str]) -> int | None:
        """The revision our transaction wrote, if it did (see _settle); else None."""
        for put in puts:
            entry = self.get_entry(put.key)
            if entry and entry.value == put.value and entry.mod_revision > guard.mod_revision:
                at = entry.mod_revision
                break
        else:
            return None
        before, then = self.get_entry(guard.key, at - 1), self.get_entry(guard.key, at)
        moved_at = then.mod_revision == at if then else guard.key in deletes
        if (before.mod_revision if before else 0) != guard.mod_revision or not moved_at:
            return None
        for put in puts:
            entry = self.get_entry(put.key, at)
            if entry is None or entry.value != put.value or entry.mod_revision != at:
                return None
        return at

    # -- leases ------------------------------------------------------------

    def lease(self, ttl: int) -> Lease:
        """Grant a lease of `ttl` seconds; keep it with refresh(), end it with revoke()."""
        # Idempotent enough to resend: a lease granted twice leaves one unused, which expires.
        result = self._post("lease/grant", {"TTL": int(ttl), "ID": 0})
        return Lease(self, int(result["ID"]), int(result.get("TTL", ttl)))

    def __repr__(self) -> str:
        return f"Etcd({self.url!r})"


class CachedReads:
    """Reads through one client, answered from memory while the store's revision stands.

    For a loop that reads the same few keys every fraction of a second (the
    supervisor): :meth:`check` costs one request (the revision); the reads
    after it go to etcd only when something was written since the last
    check. A write made after ``check`` but before a read is read (and its
    revision is newer than the checked one, so the next ``check`` reads
    again): no change is ever missed, at worst one is read twice.
    """

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self._revision: int | None = None
        self._cache: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def check(self) -> None:
        """Read the revision; forget every cached read when it moved (or cannot be read)."""
        try:
            revision: int | None = self.etcd.revision()
        except EtcdError:
            revision = None
        with self._lock:
            if revision is None or revision != self._revision:
                self._cache.clear()
            self._revision = revision

    def get(self, key: str) -> str | None:
        """Like :meth:`Etcd.get`."""
        return self._read(("key", key), lambda: self.etcd.get(key))

    def get_prefix(self, prefix: str) -> tuple[dict[str, str], int]:
        """Like :meth:`Etcd.get_prefix` (a copy: callers may change it)."""
        found, revision = self._read(("prefix", prefix), lambda: self.etcd.get_prefix(prefix))
        return dict(found), revision

    def _read(self, what: tuple[str, str], read: Any) -> Any:
        with self._lock:
            if self._revision is not None and what in self._cache:
                return self._cache[what]
            revision = self._revision
        value = read()
        with self._lock:
            if revision is not None and revision == self._revision:
                self._cache[what] = value
        return value


def _entries(kvs: Iterable[Mapping[str, Any]]) -> dict[str, Entry]:
    """PURE: the gateway's key-values (base64) as Entries by key."""
    return {
        _unb64(kv["key"]): Entry(
            value=_unb64(kv.get("value", "")),
            mod_revision=int(kv.get("mod_revision", 0)),
            create_revision=int(kv.get("create_revision", 0)),
            lease=int(kv.get("lease", 0)),
        )
        for kv in kvs
    }


def _txn_payload(compares: list[Compare], puts: list[Put], deletes: list[str]) -> dict[str, Any]:
    """PURE: the gateway's JSON for a transaction of `puts` and `deletes` guarded by `compares`."""
    compare_ops = [
        {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": int(mod_revision)}
        for key, mod_revision in compares
    ]
    success: list[dict[str, Any]] = []
    for put in puts:
        op: dict[str, Any] = {"key": _b64(put.key), "value": _b64(put.value)}
        lease_id = put.lease.id if isinstance(put.lease, Lease) else put.lease
        if lease_id:
            op["lease"] = lease_id
        success.append({"request_put": op})
    success.extend({"request_delete_range": {"key": _b64(key)}} for key in deletes)
    return {"compare": compare_ops, "success": success, "failure": []}
