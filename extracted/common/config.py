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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the monolith's parsing rules, shared so both read a variable the same way
from monolith.config import ConfigError, read_source, shared_flask_settings, shared_settings

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
    rate_limit_login: str
    rate_limit_register: str
    rate_limit_storage_url: str
    trusted_proxies: tuple

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
        source, env = read_source(overrides, environ)
        shared = shared_settings(source, env)
        return cls(
            **shared,
            name=name,
            database_url=str(
                source.get("DATABASE_URL") or f"sqlite:///{shared['data_dir'] / f'{name}.sqlite'}"
            ),
            lb_url=_url(source, "STRANGLER_LB_URL", DEFAULT_LB_URL),
            etcd_url=str(source.get("STRANGLER_ETCD") or "").strip() or None,
        )

    def flask_settings(self) -> dict[str, Any]:
        """Return the Flask ``app.config`` entries these settings map to."""
        return {
            **shared_flask_settings(self),
            "SERVICE_NAME": self.name,
            "STRANGLER_LB_URL": self.lb_url,
            "STRANGLER_ETCD": self.etcd_url,
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
