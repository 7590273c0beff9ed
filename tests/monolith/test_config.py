"""``monolith.config``: profiles, defaults, secrets and errors that name the variable."""

from __future__ import annotations

import json
import os
import stat

import pytest

from monolith.config import Config, ConfigError


def load(tmp_path, **values):
    return Config.from_env(values, environ={"STRANGLER_DATA_DIR": str(tmp_path / "data")})


def test_development_defaults(tmp_path):
    config = load(tmp_path)
    assert config.env == "development"
    assert config.database_url == f"sqlite:///{tmp_path / 'data' / 'monolith.sqlite'}"
    assert config.online_timeout == 60 and config.token_ttl == 3600
    assert config.link_expansion_allow_private is False
    assert config.socketio_message_queue is None
    assert config.start_offline_task is True


@pytest.mark.parametrize("profile", ["development", "production"])
def test_passwords_are_hashed_with_scrypt_unless_testing_or_told_otherwise(tmp_path, profile):
    environ = {"STRANGLER_DATA_DIR": str(tmp_path / "data"), "STRANGLER_ENV": profile,
               "SECRET_KEY": "s" * 32, "JWT_SECRET_KEY": "j" * 32}
    assert Config.from_env({}, environ=environ).password_hash_method == "scrypt"
    assert Config.from_env({}, environ={**environ, "STRANGLER_ENV": "testing"}).password_hash_method != "scrypt"
    told = Config.from_env({}, environ={**environ, "PASSWORD_HASH_METHOD": "pbkdf2:sha256:600000"})
    assert told.password_hash_method == "pbkdf2:sha256:600000"


def test_data_dir_defaults_under_cwd_and_is_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Config.from_env({}, environ={"STRANGLER_ENV": "testing"})
    assert config.data_dir == (tmp_path / ".strangler" / "data").resolve()
    assert config.data_dir.is_dir()


def test_environment_is_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("STRANGLER_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("ONLINE_TIMEOUT", "15")
    monkeypatch.setenv("STRANGLER_ENV", "testing")
    assert Config.from_env().online_timeout == 15
    monkeypatch.setenv("ONLINE_TIMEOUT", "20")
    assert Config.from_env().online_timeout == 20


def test_mapping_wins_over_environment(tmp_path):
    config = Config.from_env(
        {"ONLINE_TIMEOUT": 5, "STRANGLER_ENV": "testing"},
        environ={"ONLINE_TIMEOUT": "99", "STRANGLER_DATA_DIR": str(tmp_path)},
    )
    assert config.online_timeout == 5


def test_development_secrets_are_generated_once_and_persisted_0600(tmp_path):
    first = load(tmp_path)
    second = load(tmp_path)
    path = tmp_path / "data" / "secrets.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.jwt_secret_key == second.jwt_secret_key and first.secret_key == second.secret_key
    assert first.jwt_secret_key != first.secret_key
    assert json.loads(path.read_text())["JWT_SECRET_KEY"] == first.jwt_secret_key


def test_given_secrets_win_over_the_file(tmp_path):
    load(tmp_path)
    assert load(tmp_path, JWT_SECRET_KEY="given").jwt_secret_key == "given"


def test_secrets_are_not_in_the_repr(tmp_path):
    config = load(tmp_path, SECRET_KEY="top-secret-1", JWT_SECRET_KEY="top-secret-2")
    assert "top-secret" not in repr(config)


def test_testing_profile_writes_no_secrets_file(tmp_path):
    config = load(tmp_path, STRANGLER_ENV="testing")
    assert config.jwt_secret_key and not (tmp_path / "data" / "secrets.json").exists()
    assert config.start_offline_task is False


@pytest.mark.parametrize("missing", ["SECRET_KEY", "JWT_SECRET_KEY"])
def test_production_requires_secrets(tmp_path, missing):
    values = {"STRANGLER_ENV": "production", "SECRET_KEY": "a", "JWT_SECRET_KEY": "b"}
    del values[missing]
    with pytest.raises(ConfigError, match=missing):
        load(tmp_path, **values)


@pytest.mark.parametrize("profile", ["development", "testing", "production"])
def test_every_profile_refuses_private_links_unless_opted_in(tmp_path, profile):
    keys = {"SECRET_KEY": "a", "JWT_SECRET_KEY": "b"}
    assert load(tmp_path, STRANGLER_ENV=profile, **keys).link_expansion_allow_private is False
    assert load(tmp_path, STRANGLER_ENV=profile, LINK_EXPANSION_ALLOW_PRIVATE="true",
                **keys).link_expansion_allow_private is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STRANGLER_ENV", "staging"),
        ("ONLINE_TIMEOUT", "soon"),
        ("TOKEN_TTL", "-5"),
        ("LINK_EXPANSION_MAX_BYTES", "lots"),
        ("LINK_EXPANSION_ALLOW_PRIVATE", "maybe"),
    ],
)
def test_bad_values_name_the_variable(tmp_path, name, value):
    with pytest.raises(ConfigError, match=name):
        load(tmp_path, **{name: value})


def test_flask_settings_map_database_url(tmp_path):
    settings = load(tmp_path, DATABASE_URL="sqlite:////tmp/x.sqlite").flask_settings()
    assert settings["SQLALCHEMY_DATABASE_URI"] == "sqlite:////tmp/x.sqlite"
    assert settings["TESTING"] is False


def test_create_app_in_production_without_secret_fails_naming_it(tmp_path):
    from monolith import create_app

    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        create_app({"STRANGLER_ENV": "production", "SECRET_KEY": "x",
                    "STRANGLER_DATA_DIR": str(tmp_path)})
