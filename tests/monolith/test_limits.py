"""monolith.limits: logins and registrations limited per client, over real HTTP.

Every server here gets a low limit (a few calls), never the default: the
tests count to it instead of hammering. The monolith alone counts in memory;
tests/extracted/test_rate_limits_shared.py covers Redis shared by backends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_network

import pytest
import requests
from servers import serving

from monolith import create_app
from monolith.config import Config, ConfigError
from monolith.limits import client_address
from strangler.stack import procs

LOOPBACK = (ip_network("127.0.0.1/32"), ip_network("::1/128"))


@contextmanager
def flack(tmp_path, **settings: str) -> Iterator[str]:
    """A real monolith over HTTP (memory counts), with *settings* winning."""
    app = create_app({
        "STRANGLER_ENV": "testing",
        "STRANGLER_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'flack.sqlite'}",
        **settings,
    })
    try:
        with serving(app) as base:
            yield base
    finally:
        app.extensions["link_expander"].shutdown(wait=True)


def register(base: str, **headers: str) -> requests.Response:
    body = {"nickname": uuid.uuid4().hex[:12], "password": "pw"}
    return requests.post(f"{base}/api/users", json=body, headers=headers, timeout=10)


def login(base: str, nickname: str = "nobody", **headers: str) -> requests.Response:
    return requests.post(f"{base}/api/tokens", auth=(nickname, "wrong"), headers=headers, timeout=10)


# -- the client behind a proxy: pure ------------------------------------------


def test_the_peer_is_the_client_when_it_is_no_proxy():
    assert client_address("203.0.113.5", "1.2.3.4", LOOPBACK) == "203.0.113.5"
    assert client_address("203.0.113.5", None, LOOPBACK) == "203.0.113.5"


def test_behind_a_trusted_proxy_the_entry_it_appended_is_the_client():
    # Traefik appends the address it saw; what the client wrote before stays on the left
    assert client_address("127.0.0.1", "203.0.113.5", LOOPBACK) == "203.0.113.5"
    assert client_address("127.0.0.1", "6.6.6.6, 203.0.113.5", LOOPBACK) == "203.0.113.5"
    assert client_address("127.0.0.1", None, LOOPBACK) == "127.0.0.1"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right():
    proxies = (*LOOPBACK, ip_network("10.0.0.0/8"))
    assert client_address("127.0.0.1", "6.6.6.6, 203.0.113.5, 10.1.2.3", proxies) == "203.0.113.5"
    # a garbage entry is where trust ends: it is the "client", not a way past the limit
    assert client_address("127.0.0.1", "6.6.6.6, junk", proxies) == "junk"
    assert client_address("127.0.0.1", "203.0.113.5", ()) == "127.0.0.1"


# -- settings --------------------------------------------------------------------


def test_limits_default_and_are_checked(tmp_path):
    config = Config.from_env({"STRANGLER_DATA_DIR": str(tmp_path)}, environ={})
    assert (config.rate_limit_login, config.rate_limit_register) == ("20 per minute", "10 per minute")
    assert config.rate_limit_storage_url == "memory://"
    assert config.trusted_proxies == LOOPBACK
    on_platform = Config.from_env({"STRANGLER_DATA_DIR": str(tmp_path),
                                   "SOCKETIO_MESSAGE_QUEUE": "redis://127.0.0.1:6390/0"}, environ={})
    assert on_platform.rate_limit_storage_url == "redis://127.0.0.1:6390/0"
    for name, value, hint in [("RATE_LIMIT_LOGIN", "lots", "'20 per minute'"),
                              ("RATE_LIMIT_REGISTER", "5 per fortnight", "'5/second;100/hour'"),
                              ("TRUSTED_PROXIES", "traefik", "10.0.0.0/8"),
                              ("RATE_LIMIT_STORAGE_URL", "localhost", "redis://")]:
        with pytest.raises(ConfigError, match=name) as caught:
            Config.from_env({"STRANGLER_DATA_DIR": str(tmp_path), name: value}, environ={})
        assert hint in str(caught.value)


# -- over HTTP -------------------------------------------------------------------


@pytest.mark.integration
def test_registrations_past_the_limit_get_a_json_429_with_retry_after(tmp_path):
    with flack(tmp_path, RATE_LIMIT_REGISTER="3 per minute") as base:
        assert [register(base).status_code for _ in range(3)] == [201, 201, 201]
        refused = register(base)
        assert refused.status_code == 429
        assert refused.headers["Content-Type"] == "application/json"
        assert set(refused.json()) == {"error"}
        assert "at most 3 per 1 minute" in refused.json()["error"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 61
        # reading is not limited, nor is logging in, which has its own budget
        assert requests.get(f"{base}/api/users", timeout=10).status_code == 200
        assert login(base).status_code == 401


@pytest.mark.integration
def test_logins_past_the_limit_are_refused_before_the_password_is_checked(tmp_path):
    with flack(tmp_path, RATE_LIMIT_LOGIN="2 per minute") as base:
        assert register(base).status_code == 201
        assert [login(base).status_code for _ in range(2)] == [401, 401]
        refused = login(base)
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        assert "WWW-Authenticate" not in refused.headers


@pytest.mark.integration
def test_a_forwarded_for_header_counts_only_from_a_trusted_proxy(tmp_path):
    # nobody trusted: the client's own X-Forwarded-For does not buy a fresh budget
    with flack(tmp_path / "a", RATE_LIMIT_REGISTER="2 per minute", TRUSTED_PROXIES="") as base:
        codes = [register(base, **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code
                 for i in range(3)]
        assert codes == [201, 201, 429]
    # the loopback proxy (Traefik, by default) is believed: one budget per client it names,
    # and what a client wrote left of the proxy's entry is ignored
    with flack(tmp_path / "b", RATE_LIMIT_REGISTER="2 per minute") as base:
        alice = [register(base, **{"X-Forwarded-For": f"6.6.6.{i}, 203.0.113.7"}).status_code
                 for i in range(3)]
        assert alice == [201, 201, 429]
        assert register(base, **{"X-Forwarded-For": "203.0.113.8"}).status_code == 201


@pytest.mark.integration
def test_through_traefik_a_forged_forwarded_for_changes_nothing(tmp_path, traefik_server):
    from router import table

    with flack(tmp_path, RATE_LIMIT_REGISTER="2 per minute") as base:
        kv = traefik_server.etcd.client()
        kv.put("traefik/http/services/monolith/loadbalancer/servers/limits-1/url", base,
               lease=kv.lease(60))
        table.initialise(kv, [], who="test")
        web = traefik_server.web_url
        procs.wait_until(lambda: requests.get(f"{web}/healthz", timeout=5).status_code == 200, 15,
                         "Traefik routing to the monolith")
        codes = [register(web, **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code
                 for i in range(3)]
        assert codes == [201, 201, 429]
