"""A service's settings, read from the environment at call time.

The same variables as the monolith (``STRANGLER_ENV`` picks the profile,
``STRANGLER_DATA_DIR``, ``DATABASE_URL``, ``SECRET_KEY``, ``JWT_SECRET_KEY``,
``SOCKETIO_MESSAGE_QUEUE``, ``TOKEN_TTL``, ...) plus what a service on the
platform needs: ``STRANGLER_LB_URL`` (the load balancer other services are
reached through) and ``STRANGLER_ETCD`` (where revoked tokens live). Tests
pass a mapping that wins over the environment. A bad or missing setting
raises ``monolith.config.ConfigError`` naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the monolith's parsing rules, shared so both read a variable the same way
from monolith.config import PROFILES, ConfigError, _data_dir, _flag, _number, _secrets

__all__ = ["DEFAULT_LB_URL", "ConfigError", "ServiceConfig"]

DEFAULT_LB_URL = "http://127.0.0.1:8000"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ServiceConfig:
    """One service's settings; build one with :meth:`ServiceConfig.from_env`."""

    name: str
    env: str
    data_dir: Path
    database_url: str
    secret_key: str = field(repr=False)
    jwt_secret_key: str = field(repr=False)
    socketio_message_queue: str | None
    lb_url: str
    etcd_url: str | None
    token_ttl: float
    password_hash_method: str
    online_timeout: float
    offline_check_interval: float
    start_offline_task: bool
    link_expansion_allow_private: bool
    link_expansion_timeout: float
    link_expansion_max_bytes: int

    @classmethod
    def from_env(
        cls,
        name: str,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ServiceConfig:
        """Read service *name*'s settings from *environ* (default ``os.environ``), *overrides* winning.

        ``DATABASE_URL`` defaults to ``sqlite:///<data dir>/<name>.sqlite``.
        """
        if not _NAME.match(name or ""):
            raise ConfigError(f"service name {name!r} must be lower-case letters, digits and _")
        source: dict[str, Any] = dict(os.environ if environ is None else environ)
        source.update(overrides or {})
        env = str(source.get("STRANGLER_ENV") or "development")
        if env not in PROFILES:
            raise ConfigError(f"STRANGLER_ENV must be one of {', '.join(PROFILES)}, not {env!r}")
        data_dir = _data_dir(source)
        keys = _secrets(source, env, data_dir)
        return cls(
            name=name,
            env=env,
            data_dir=data_dir,
            database_url=str(source.get("DATABASE_URL") or f"sqlite:///{data_dir / f'{name}.sqlite'}"),
            secret_key=keys["SECRET_KEY"],
            jwt_secret_key=keys["JWT_SECRET_KEY"],
            socketio_message_queue=source.get("SOCKETIO_MESSAGE_QUEUE") or None,
            lb_url=_url(source, "STRANGLER_LB_URL", DEFAULT_LB_URL),
            etcd_url=str(source.get("STRANGLER_ETCD") or "").strip() or None,
            token_ttl=_number(source, "TOKEN_TTL", 3600.0),
            # a cheap hash keeps the test suite fast; real profiles use scrypt
            password_hash_method=str(
                source.get("PASSWORD_HASH_METHOD")
                or ("pbkdf2:sha256:1000" if env == "testing" else "scrypt")
            ),
            online_timeout=_number(source, "ONLINE_TIMEOUT", 60.0),
            offline_check_interval=_number(source, "OFFLINE_CHECK_INTERVAL", 5.0),
            start_offline_task=_flag(source, "START_OFFLINE_TASK", env != "testing"),
            link_expansion_allow_private=_flag(
                source, "LINK_EXPANSION_ALLOW_PRIVATE", env != "production"
            ),
            link_expansion_timeout=_number(source, "LINK_EXPANSION_TIMEOUT", 3.0),
            link_expansion_max_bytes=int(_number(source, "LINK_EXPANSION_MAX_BYTES", 512 * 1024)),
        )

    def flask_settings(self) -> dict[str, Any]:
        """Return the Flask ``app.config`` entries these settings map to."""
        return {
            "SERVICE_NAME": self.name,
            "STRANGLER_ENV": self.env,
            "TESTING": self.env == "testing",
            "SECRET_KEY": self.secret_key,
            "JWT_SECRET_KEY": self.jwt_secret_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "DATABASE_URL": self.database_url,
            "STRANGLER_DATA_DIR": str(self.data_dir),
            "SOCKETIO_MESSAGE_QUEUE": self.socketio_message_queue,
            "STRANGLER_LB_URL": self.lb_url,
            "STRANGLER_ETCD": self.etcd_url,
            "TOKEN_TTL": self.token_ttl,
            "PASSWORD_HASH_METHOD": self.password_hash_method,
            "ONLINE_TIMEOUT": self.online_timeout,
            "OFFLINE_CHECK_INTERVAL": self.offline_check_interval,
            "START_OFFLINE_TASK": self.start_offline_task,
            "LINK_EXPANSION_ALLOW_PRIVATE": self.link_expansion_allow_private,
            "LINK_EXPANSION_TIMEOUT": self.link_expansion_timeout,
            "LINK_EXPANSION_MAX_BYTES": self.link_expansion_max_bytes,
            # as the monolith: no request of the contract needs a megabyte
            "MAX_CONTENT_LENGTH": 1024 * 1024,
        }

    @property
    def migrate_lock(self) -> Path:
        """The lock file two processes migrating this service's database take turns on."""
        return self.data_dir / f"{self.name}.migrate.lock"


def _url(source: Mapping[str, Any], name: str, default: str) -> str:
    raw = str(source.get(name) or default).strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", raw):
        raise ConfigError(f"{name} must be an http(s) URL like {default}, not {raw!r}")
    return raw
