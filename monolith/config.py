"""Flack's settings, read from the environment at call time.

One variable, ``STRANGLER_ENV``, chooses the profile (``development`` by
default, ``production`` or ``testing``); tests pass a mapping that wins over
the environment. Every bad or missing setting raises :class:`ConfigError`
naming the variable to fix.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from datalink.files import load_or_create_secrets as create_secrets
from datalink.files import private_dir

PROFILES = ("development", "production", "testing")
SECRET_NAMES = ("SECRET_KEY", "JWT_SECRET_KEY")
# a scrypt hash each: per client, enough for people, too few for a brute force or a flood
DEFAULT_RATE_LIMIT_LOGIN = "20 per minute"
DEFAULT_RATE_LIMIT_REGISTER = "10 per minute"
# Traefik on the same host; a proxy elsewhere (compose) is named in TRUSTED_PROXIES
DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"
TRUE_WORDS = {"1", "true", "yes", "on"}

IPNetwork = IPv4Network | IPv6Network
FALSE_WORDS = {"0", "false", "no", "off"}


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Config:
    """The monolith's settings; build one with :meth:`Config.from_env`."""

    env: str
    data_dir: Path
    database_url: str
    secret_key: str = field(repr=False)
    jwt_secret_key: str = field(repr=False)
    socketio_message_queue: str | None
    online_timeout: float
    offline_check_interval: float
    link_expansion_allow_private: bool
    link_expansion_timeout: float
    link_expansion_max_bytes: int
    token_ttl: float
    revocation_store: Any
    start_offline_task: bool
    password_hash_method: str
    rate_limit_login: str
    rate_limit_register: str
    rate_limit_storage_url: str
    trusted_proxies: tuple[IPNetwork, ...]

    @classmethod
    def from_env(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Read the settings from *environ* (default ``os.environ``), *overrides* winning."""
        source, env = read_source(overrides, environ)
        shared = shared_settings(source, env)
        return cls(
            **shared,
            database_url=str(
                source.get("DATABASE_URL") or f"sqlite:///{shared['data_dir'] / 'monolith.sqlite'}"
            ),
            revocation_store=source.get("REVOCATION_STORE") or "database",
        )

    def flask_settings(self) -> dict[str, Any]:
        """Return the Flask ``app.config`` entries these settings map to."""
        return {**shared_flask_settings(self), "REVOCATION_STORE": self.revocation_store}


def read_source(
    overrides: Mapping[str, Any] | None, environ: Mapping[str, str] | None
) -> tuple[dict[str, Any], str]:
    """Return *environ* (default ``os.environ``) with *overrides* winning, and the profile it names.

    Raises :class:`ConfigError` when ``STRANGLER_ENV`` is not a known profile.
    """
    source: dict[str, Any] = dict(os.environ if environ is None else environ)
    source.update(overrides or {})
    env = str(source.get("STRANGLER_ENV") or "development")
    if env not in PROFILES:
        raise ConfigError(f"STRANGLER_ENV must be one of {', '.join(PROFILES)}, not {env!r}")
    return source, env


def shared_settings(source: Mapping[str, Any], env: str) -> dict[str, Any]:
    """Return the settings the monolith and every service read alike, by field name.

    Raises :class:`ConfigError` naming the first bad variable.
    """
    data_dir = _data_dir(source)
    keys = _secrets(source, env, data_dir)
    return {
        "env": env,
        "data_dir": data_dir,
        "secret_key": keys["SECRET_KEY"],
        "jwt_secret_key": keys["JWT_SECRET_KEY"],
        "socketio_message_queue": source.get("SOCKETIO_MESSAGE_QUEUE") or None,
        "online_timeout": _number(source, "ONLINE_TIMEOUT", 60.0),
        "offline_check_interval": _number(source, "OFFLINE_CHECK_INTERVAL", 5.0),
        # the SSRF guard is on in every profile: fetching loopback, private or
        # link-local pages for a preview is an explicit opt-in (tests, a lab)
        "link_expansion_allow_private": _flag(source, "LINK_EXPANSION_ALLOW_PRIVATE", False),
        "link_expansion_timeout": _number(source, "LINK_EXPANSION_TIMEOUT", 3.0),
        "link_expansion_max_bytes": int(_number(source, "LINK_EXPANSION_MAX_BYTES", 512 * 1024)),
        "token_ttl": _number(source, "TOKEN_TTL", 3600.0),
        "start_offline_task": _flag(source, "START_OFFLINE_TASK", env != "testing"),
        # a cheap hash keeps the test suite fast; real profiles use scrypt
        "password_hash_method": str(
            source.get("PASSWORD_HASH_METHOD")
            or ("pbkdf2:sha256:1000" if env == "testing" else "scrypt")
        ),
        "rate_limit_login": _rate(source, "RATE_LIMIT_LOGIN", DEFAULT_RATE_LIMIT_LOGIN),
        "rate_limit_register": _rate(source, "RATE_LIMIT_REGISTER", DEFAULT_RATE_LIMIT_REGISTER),
        "rate_limit_storage_url": _rate_storage(source),
        "trusted_proxies": _networks(source, "TRUSTED_PROXIES", DEFAULT_TRUSTED_PROXIES),
    }


def shared_flask_settings(config: Any) -> dict[str, Any]:
    """Return the Flask ``app.config`` entries of *config*'s :func:`shared_settings` fields."""
    return {
        "STRANGLER_ENV": config.env,
        "TESTING": config.env == "testing",
        "SECRET_KEY": config.secret_key,
        "JWT_SECRET_KEY": config.jwt_secret_key,
        "SQLALCHEMY_DATABASE_URI": config.database_url,
        "DATABASE_URL": config.database_url,
        "STRANGLER_DATA_DIR": str(config.data_dir),
        "SOCKETIO_MESSAGE_QUEUE": config.socketio_message_queue,
        "ONLINE_TIMEOUT": config.online_timeout,
        "OFFLINE_CHECK_INTERVAL": config.offline_check_interval,
        "LINK_EXPANSION_ALLOW_PRIVATE": config.link_expansion_allow_private,
        "LINK_EXPANSION_TIMEOUT": config.link_expansion_timeout,
        "LINK_EXPANSION_MAX_BYTES": config.link_expansion_max_bytes,
        "TOKEN_TTL": config.token_ttl,
        "START_OFFLINE_TASK": config.start_offline_task,
        "PASSWORD_HASH_METHOD": config.password_hash_method,
        # a chat message never needs a megabyte; bigger bodies get a JSON 413
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        "RATE_LIMIT_LOGIN": config.rate_limit_login,
        "RATE_LIMIT_REGISTER": config.rate_limit_register,
        "RATE_LIMIT_STORAGE_URL": config.rate_limit_storage_url,
        "TRUSTED_PROXIES": config.trusted_proxies,
    }


def _data_dir(source: Mapping[str, Any]) -> Path:
    path = Path(source.get("STRANGLER_DATA_DIR") or Path.cwd() / ".strangler" / "data")
    try:
        private_dir(path)  # databases and secrets live here: the owner's only
    except OSError as exc:
        raise ConfigError(f"STRANGLER_DATA_DIR {str(path)!r} cannot be created: {exc.strerror}") from exc
    return path.resolve()


def _number(source: Mapping[str, Any], name: str, default: float) -> float:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {raw!r}")
    return value


def _rate(source: Mapping[str, Any], name: str, default: str) -> str:
    """A rate limit like ``20 per minute`` or ``5/second;100/hour`` (Flask-Limiter's notation)."""
    from limits import parse_many

    raw = str(source.get(name) or default).strip()
    try:
        parse_many(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a rate like '20 per minute' or '5/second;100/hour', "
                          f"not {raw!r}") from None
    return raw


def _rate_storage(source: Mapping[str, Any]) -> str:
    """Where rate-limit counters live: ``RATE_LIMIT_STORAGE_URL``, else the Socket.IO queue's Redis.

    On the platform every backend and instance then counts in one Redis; the
    monolith alone counts in its own memory.
    """
    raw = str(source.get("RATE_LIMIT_STORAGE_URL") or "").strip()
    if raw:
        if "://" not in raw:
            raise ConfigError(f"RATE_LIMIT_STORAGE_URL must be a URL like redis://127.0.0.1:6379/0 "
                              f"or memory://, not {raw!r}")
        return raw
    queue = str(source.get("SOCKETIO_MESSAGE_QUEUE") or "").strip()
    return queue if queue.startswith(("redis://", "rediss://", "redis+unix://")) else "memory://"


def _networks(source: Mapping[str, Any], name: str, default: str) -> tuple[IPNetwork, ...]:
    raw = str(source.get(name) if source.get(name) is not None else default)
    try:
        return tuple(ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{name} must be addresses or networks separated by commas "
                          f"(e.g. 127.0.0.1,10.0.0.0/8), not {raw!r}") from None


def _flag(source: Mapping[str, Any], name: str, default: bool) -> bool:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false (1/0, yes/no), not {raw!r}")


def _secrets(source: Mapping[str, Any], env: str, data_dir: Path) -> dict[str, str]:
    given = {name: str(source[name]) for name in SECRET_NAMES if source.get(name)}
    missing = [name for name in SECRET_NAMES if name not in given]
    if not missing:
        return given
    if env == "production":
        raise ConfigError(f"{missing[0]} is required in production; set it in the environment")
    if env == "testing":
        # throw-away keys: a test run must not leave files behind
        return {**{name: secrets.token_hex(32) for name in missing}, **given}
    return {**load_or_create_secrets(data_dir / "secrets.json"), **given}


def load_or_create_secrets(path: Path) -> dict[str, str]:
    """Return the development secrets stored at *path*, generating them on first use (0600, O_EXCL)."""
    try:
        return create_secrets(path, SECRET_NAMES)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
