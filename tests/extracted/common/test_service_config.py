"""``extracted.common.config.ServiceConfig``: a service's settings from the environment."""

from __future__ import annotations

import pytest

from extracted.common.config import ConfigError, ServiceConfig


def test_defaults_name_the_service(tmp_path):
    config = ServiceConfig.from_env("users", {"STRANGLER_DATA_DIR": str(tmp_path)}, environ={})
    assert config.database_url == f"sqlite:///{tmp_path.resolve() / 'users.sqlite'}"
    assert config.lb_url == "http://127.0.0.1:8000" and config.etcd_url is None
    assert config.flask_settings()["SERVICE_NAME"] == "users"


def test_development_secrets_are_shared_through_the_data_dir(tmp_path):
    first = ServiceConfig.from_env("users", {"STRANGLER_DATA_DIR": str(tmp_path)}, environ={})
    second = ServiceConfig.from_env("tokens", {"STRANGLER_DATA_DIR": str(tmp_path)}, environ={})
    assert first.jwt_secret_key == second.jwt_secret_key and len(first.jwt_secret_key) >= 32


def test_production_requires_the_secrets(tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY is required"):
        ServiceConfig.from_env("tokens", {"STRANGLER_ENV": "production",
                                          "STRANGLER_DATA_DIR": str(tmp_path)}, environ={})


@pytest.mark.parametrize("overrides,variable", [
    ({"STRANGLER_LB_URL": "127.0.0.1:8000"}, "STRANGLER_LB_URL"),
    ({"TOKEN_TTL": "soon"}, "TOKEN_TTL"),
    ({"STRANGLER_ENV": "staging"}, "STRANGLER_ENV"),
])
def test_bad_settings_name_the_variable(tmp_path, overrides, variable):
    with pytest.raises(ConfigError, match=variable):
        ServiceConfig.from_env("users", {"STRANGLER_DATA_DIR": str(tmp_path), **overrides}, environ={})


def test_environment_is_read_and_overrides_win(tmp_path):
    environ = {"STRANGLER_LB_URL": "http://lb:9000/", "STRANGLER_ETCD": "http://127.0.0.1:2379",
               "STRANGLER_DATA_DIR": str(tmp_path), "STRANGLER_ENV": "testing"}
    config = ServiceConfig.from_env("messages", {"STRANGLER_LB_URL": "http://other:1"}, environ=environ)
    assert config.lb_url == "http://other:1" and config.etcd_url == "http://127.0.0.1:2379"
    assert ServiceConfig.from_env("messages", environ=environ).lb_url == "http://lb:9000"


def test_service_names_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="service name"):
        ServiceConfig.from_env("../users", {"STRANGLER_DATA_DIR": str(tmp_path)}, environ={})
