"""``extracted.common.auth``: bearer tokens checked with the shared secret and a real etcd store."""

from __future__ import annotations

import time

import pytest
from flask import g

from extracted.common.auth import AuthError, token_auth, token_optional_auth
from extracted.common.service import make_app
from monolith.tokens import decode_token, issue_token

pytestmark = pytest.mark.integration

SECRET = "j" * 64
CHALLENGE = 'Bearer realm="Authentication Required"'


def build(tmp_path, **config):
    settings = {"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path),
                "JWT_SECRET_KEY": SECRET, **config}
    app = make_app("probe", settings)

    @app.get("/api/private")
    @token_auth
    def private():
        return {"user_id": g.user_id, "jti": g.claims["jti"]}

    @app.get("/api/public")
    @token_optional_auth
    def public():
        return {"user_id": g.user_id}

    return app


@pytest.fixture(scope="module")
def app(etcd_server, tmp_path_factory):
    return build(tmp_path_factory.mktemp("auth"), STRANGLER_ETCD=etcd_server.url)


@pytest.fixture
def client(app):
    return app.test_client()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response, reason):
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert reason in response.json["error"]


def test_valid_token_sets_user_and_claims(client):
    token = issue_token(41, "ada", SECRET)
    response = client.get("/api/private", headers=bearer(token))
    assert response.status_code == 200
    assert response.json == {"user_id": 41, "jti": decode_token(token, SECRET)["jti"]}


def test_missing_token_is_401_only_where_required(client):
    assert_refused(client.get("/api/private"), "token is required")
    assert client.get("/api/public").json == {"user_id": None}


def test_expired_token_is_401(client):
    old = issue_token(1, "ada", SECRET, ttl=5, now=time.time() - 60)
    assert_refused(client.get("/api/private", headers=bearer(old)), "invalid token")


def test_token_signed_with_another_secret_is_401_even_where_optional(client):
    forged = issue_token(1, "ada", "x" * 64)
    assert_refused(client.get("/api/public", headers=bearer(forged)), "invalid token")


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Token abc", "Basic YTpi"])
def test_malformed_header_is_401(client, header):
    assert_refused(client.get("/api/private", headers={"Authorization": header}), "Bearer")


def test_revoked_jti_is_refused_by_every_app_on_the_store(app, client, etcd_server, tmp_path):
    token = issue_token(2, "bob", SECRET)
    claims = decode_token(token, SECRET)
    other = build(tmp_path, STRANGLER_ETCD=etcd_server.url).test_client()
    assert other.get("/api/private", headers=bearer(token)).status_code == 200
    app.extensions["revocation_store"].revoke(claims["jti"], claims["exp"])
    assert_refused(other.get("/api/private", headers=bearer(token)), "revoked")
    assert_refused(client.get("/api/public", headers=bearer(token)), "revoked")


def test_user_revocation_refuses_tokens_issued_up_to_then(app, client):
    before = issue_token(3, "cy", SECRET, now=time.time() - 1)
    app.extensions["revocation_store"].revoke_user(3, time.time() - 0.5)
    after = issue_token(3, "cy", SECRET)
    assert_refused(client.get("/api/private", headers=bearer(before)), "revoked")
    assert client.get("/api/private", headers=bearer(after)).status_code == 200
    assert client.get("/api/private", headers=bearer(issue_token(4, "di", SECRET))).status_code == 200


def test_token_hook_runs_and_may_refuse(app, client):
    seen = []

    def hook(claims):
        seen.append(claims["sub"])
        if claims["sub"] == "99":
            raise AuthError("token names a user that does not exist")

    app.extensions["token_hook"] = hook
    try:
        assert client.get("/api/private", headers=bearer(issue_token(5, "ed", SECRET))).status_code == 200
        assert_refused(client.get("/api/private", headers=bearer(issue_token(99, "x", SECRET))),
                       "does not exist")
    finally:
        del app.extensions["token_hook"]
    assert seen == ["5", "99"]


def test_etcd_down_is_503_json_not_accepted(tmp_path):
    import socket

    from router.etcd import Etcd
    from router.revocation import EtcdRevocationStore

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = EtcdRevocationStore(Etcd(f"http://127.0.0.1:{port}", timeout=0.5))
    client = build(tmp_path, REVOCATION_STORE=store).test_client()
    response = client.get("/api/private", headers=bearer(issue_token(1, "ada", SECRET)))
    assert response.status_code == 503
    assert "revocations cannot be checked" in response.json["error"]


def test_no_store_configured_is_503_json(tmp_path):
    client = build(tmp_path).test_client()
    response = client.get("/api/private", headers=bearer(issue_token(1, "ada", SECRET)))
    assert response.status_code == 503
    assert "STRANGLER_ETCD" in response.json["error"]
