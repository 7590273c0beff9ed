"""Bearer-token auth for services: the shared JWT secret plus the shared revocation store.

A service has no users table to look tokens up in (except ``users``): a
token is good when its signature and expiry check out
(``monolith.tokens.decode_token``) and the revocation store
(``app.extensions["revocation_store"]``, etcd on the platform) does not refuse
it. Failures are the monolith's 401 ``{"error": ...}`` with
``WWW-Authenticate: Bearer realm="Authentication Required"``.

After a token is accepted, ``app.extensions["token_hook"]`` (if set) is called
with the claims: ``users`` marks the user online there, other services call
:func:`mark_seen` (``PUT /internal/users/<id>/seen``). A hook may raise
``AuthError`` to refuse the token after all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g

from monolith.auth import BEARER_CHALLENGE, AuthError, _bearer_token, auth_error_response
from monolith.revocation import is_token_revoked
from monolith.tokens import InvalidToken, decode_token, user_id_of
from router.lbclient import ServiceUnavailable

__all__ = [
    "BEARER_CHALLENGE",
    "AuthError",
    "mark_seen",
    "token_auth",
    "token_optional_auth",
    "verify_token",
]

View = TypeVar("View", bound=Callable[..., Any])


def verify_token(token: Any) -> dict[str, Any]:
    """Return the claims of a valid, unrevoked *token*; raise ``AuthError``.

    Raises :class:`ServiceUnavailable` when revocations cannot be checked
    (no store configured, or etcd not answering): refusing with a 503 beats
    accepting a token that may have been revoked.
    """
    from router.etcd import EtcdError

    try:
        claims = decode_token(token, current_app.config["JWT_SECRET_KEY"])
    except InvalidToken as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    store = current_app.extensions.get("revocation_store")
    if store is None:
        raise ServiceUnavailable(
            "token revocations cannot be checked: set STRANGLER_ETCD (strangler up does)"
        )
    try:
        revoked = is_token_revoked(store, claims)
    except EtcdError as exc:
        raise ServiceUnavailable(f"token revocations cannot be checked: {exc}") from exc
    if revoked:
        raise AuthError("token has been revoked")
    return claims


def _authenticate(required: bool) -> None:
    token = _bearer_token()
    if token is None:
        if required:
            raise AuthError("a token is required; get one with POST /api/tokens")
        g.claims, g.user_id = None, None
        return
    claims = verify_token(token)
    hook = current_app.extensions.get("token_hook")
    if hook is not None:
        hook(claims)
    g.claims, g.user_id = claims, user_id_of(claims)


def _guard(required: bool, view: View) -> View:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _authenticate(required)
        except AuthError as exc:
            return auth_error_response(exc)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def token_auth(view: View) -> View:
    """Require a valid bearer token; sets ``g.claims`` and ``g.user_id`` (an int)."""
    return _guard(True, view)


def token_optional_auth(view: View) -> View:
    """Accept a request without a token but refuse a bad one; ``g.claims``/``g.user_id`` may be None."""
    return _guard(False, view)


def mark_seen(claims: dict[str, Any]) -> None:
    """A ``token_hook``: tell ``users`` (through the LB) that the token's user is online now.

    Raises ``AuthError`` when users does not know the user (as the monolith
    refuses a token naming a user that does not exist), and
    :class:`ServiceUnavailable` when users cannot be reached.
    """
    user_id = user_id_of(claims)
    response = current_app.extensions["lb"].put(f"/internal/users/{user_id}/seen", service="users")
    if response.status_code == 204:
        return
    if response.status_code == 404 and _error_of(response) == f"user {user_id} not found":
        raise AuthError("token names a user that does not exist")
    # any other 404 is not users' answer: the path is routed elsewhere (e.g. the monolith)
    raise ServiceUnavailable(
        f"users is unavailable: PUT /internal/users/{user_id}/seen answered {response.status_code}"
        " (is /internal/users/ routed to users?)"
    )


def _error_of(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None
