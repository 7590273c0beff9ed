"""``monolith.revocation``: the database store behind token revocation."""

from __future__ import annotations

from monolith.revocation import DatabaseRevocationStore, RevocationStore, is_token_revoked


def test_database_store_satisfies_the_protocol(app):
    assert isinstance(app.extensions["revocation_store"], RevocationStore)
    assert isinstance(app.extensions["revocation_store"], DatabaseRevocationStore)


def test_revoke_and_is_revoked(app):
    store = DatabaseRevocationStore()
    with app.app_context():
        assert not store.is_revoked("abc")
        store.revoke("abc", expires_at=2000.0)
        store.revoke("abc", expires_at=1000.0)  # twice is fine
        assert store.is_revoked("abc")
        assert not store.is_revoked("abd")


def test_revoke_user_keeps_the_latest_instant(app):
    store = DatabaseRevocationStore(token_ttl=100)
    with app.app_context():
        assert store.user_revoked_at(3) is None
        store.revoke_user(3, 1000.5)
        store.revoke_user(3, 900.0)
        assert store.user_revoked_at(3) == 1000.5
        store.revoke_user(3, 1000.75)
        assert store.user_revoked_at(3) == 1000.75
        assert store.user_revoked_at(4) is None


def test_is_token_revoked_compares_iat_with_user_revocation(app):
    store = DatabaseRevocationStore()
    with app.app_context():
        store.revoke_user(3, 1000.5)
        assert is_token_revoked(store, {"jti": "a", "sub": "3", "iat": 1000.5})
        assert is_token_revoked(store, {"jti": "a", "sub": "3", "iat": 1000.4})
        assert not is_token_revoked(store, {"jti": "a", "sub": "3", "iat": 1000.6})
        assert not is_token_revoked(store, {"jti": "a", "sub": "4", "iat": 1.0})


def test_prune_drops_only_expired_revocations(app):
    store = DatabaseRevocationStore(token_ttl=100)
    with app.app_context():
        store.revoke("old", expires_at=500.0)
        store.revoke("new", expires_at=5000.0)
        store.revoke_user(1, 300.0)  # forgettable after 400
        assert store.prune(now=1000.0) == 2
        assert store.is_revoked("new") and not store.is_revoked("old")
        assert store.user_revoked_at(1) is None
        assert store.count() == 1


def test_injected_store_object_is_used(tmp_path):
    from flack_helpers import basic_auth, bearer

    from monolith import create_app

    class MemoryStore:
        def __init__(self):
            self.jtis, self.users = set(), {}

        def revoke(self, jti, expires_at):
            self.jtis.add(jti)

        def is_revoked(self, jti):
            return jti in self.jtis

        def revoke_user(self, user_id, at):
            self.users[user_id] = at

        def user_revoked_at(self, user_id):
            return self.users.get(user_id)

    store = MemoryStore()
    app = create_app({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "d"),
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}", "REVOCATION_STORE": store})
    try:
        assert app.extensions["revocation_store"] is store
        client = app.test_client()
        client.post("/api/users", json={"nickname": "ada", "password": "pw"})
        token = client.post("/api/tokens", headers=basic_auth("ada", "pw")).json["token"]
        assert client.delete("/api/tokens", headers=bearer(token)).status_code == 204
        assert len(store.jtis) == 1
        assert client.get("/api/users", headers=bearer(token)).status_code == 401
    finally:
        app.extensions["link_expander"].shutdown()
