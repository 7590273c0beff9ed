"""``/api/tokens`` and ``monolith.tokens``: JWT login, verification and revocation."""

from __future__ import annotations

import time

import jwt
import pytest
from flack_helpers import basic_auth, bearer

from monolith.tokens import InvalidToken, decode_token, issue_token, user_id_of

SECRET = "s" * 64


def test_issue_and_decode_round_trip():
    token = issue_token(7, "ada", SECRET, ttl=60, now=1000.25)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["sub"] == "7" and claims["nickname"] == "ada"
    assert claims["iat"] == 1000.25 and claims["exp"] == 1060.25
    assert len(claims["jti"]) >= 16
    assert user_id_of(decode_token(issue_token(7, "ada", SECRET), SECRET)) == 7


def test_each_token_has_its_own_jti():
    first, second = (decode_token(issue_token(1, "a", SECRET), SECRET) for _ in range(2))
    assert first["jti"] != second["jti"]


def test_iat_has_sub_second_precision():
    now = int(time.time()) + 0.123456
    claims = decode_token(issue_token(1, "a", SECRET, now=now), SECRET)
    assert claims["iat"] == now and claims["iat"] != int(claims["iat"])


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        issue_token(1, "a", "other-secret" * 4),
        issue_token(1, "a", SECRET, ttl=10, now=time.time() - 100),
        jwt.encode({"sub": "1", "jti": "x", "iat": time.time(), "exp": time.time() + 60}, SECRET),
        jwt.encode({"sub": "abc", "nickname": "a", "jti": "x", "iat": time.time(),
                    "exp": time.time() + 60}, SECRET),
        jwt.encode({"sub": "1", "nickname": "a", "jti": "x", "iat": time.time(),
                    "exp": time.time() + 60}, SECRET, algorithm="HS512"),
    ],
)
def test_decode_refuses_bad_tokens(token):
    with pytest.raises(InvalidToken):
        decode_token(token, SECRET)


def test_decode_refuses_non_strings():
    with pytest.raises(InvalidToken):
        decode_token(None, SECRET)  # type: ignore[arg-type]


def test_new_token_with_good_password(app, client, make_user):
    user, token = make_user("ada", "pw")
    claims = decode_token(token, app.config["JWT_SECRET_KEY"])
    assert claims["sub"] == str(user["id"]) and claims["nickname"] == "ada"
    assert claims["exp"] - claims["iat"] == pytest.approx(app.config["TOKEN_TTL"])


def test_new_token_marks_user_online(client):
    created = client.post("/api/users", json={"nickname": "ada", "password": "pw"}).json
    assert created["online"] is False
    client.post("/api/tokens", headers=basic_auth("ada", "pw"))
    assert client.get(f"/api/users/{created['id']}").json["online"] is True


@pytest.mark.parametrize(
    "headers",
    [
        basic_auth("ada", "wrong"),
        basic_auth("nobody", "pw"),
        {},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Bearer something"},
    ],
)
def test_new_token_bad_credentials_are_401_basic(client, headers):
    client.post("/api/users", json={"nickname": "ada", "password": "pw"})
    response = client.post("/api/tokens", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Authentication Required"'
    assert response.json["error"]


def test_revoke_token_refuses_it_afterwards(client, make_user):
    _user, token = make_user("ada")
    assert client.delete("/api/tokens", headers=bearer(token)).status_code == 204
    response = client.get("/api/users", headers=bearer(token))
    assert response.status_code == 401
    assert "revoked" in response.json["error"]
    assert client.delete("/api/tokens", headers=bearer(token)).status_code == 401


def test_revoking_one_token_keeps_the_others(client, make_user):
    _user, first = make_user("ada", "pw")
    second = client.post("/api/tokens", headers=basic_auth("ada", "pw")).json["token"]
    client.delete("/api/tokens", headers=bearer(first))
    assert client.get("/api/users", headers=bearer(second)).status_code == 200


def test_revoke_token_without_token_is_401(client):
    response = client.delete("/api/tokens")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Authentication Required"'


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Token abc", "bearer"])
def test_malformed_authorization_header_is_401(client, header):
    response = client.get("/api/users", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.is_json


def test_expired_token_is_401(app, client, make_user):
    user, _token = make_user("ada")
    old = issue_token(user["id"], "ada", app.config["JWT_SECRET_KEY"], ttl=5, now=time.time() - 60)
    assert client.get("/api/users", headers=bearer(old)).status_code == 401


def test_token_of_deleted_or_unknown_user_is_401(app, client):
    ghost = issue_token(4242, "ghost", app.config["JWT_SECRET_KEY"])
    assert client.get("/api/users", headers=bearer(ghost)).status_code == 401


def test_tokens_signed_with_jwt_secret_from_config(tmp_path, make_user):
    from monolith import create_app

    app = create_app({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "d"),
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}",
                      "JWT_SECRET_KEY": SECRET * 2})
    try:
        client = app.test_client()
        client.post("/api/users", json={"nickname": "ada", "password": "pw"})
        token = client.post("/api/tokens", headers=basic_auth("ada", "pw")).json["token"]
        assert decode_token(token, SECRET * 2)["nickname"] == "ada"
    finally:
        app.extensions["link_expander"].shutdown()
