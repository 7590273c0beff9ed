"""router.registry and router.gunicorn_hooks: exact keys, and joining/leaving a real etcd."""

from __future__ import annotations

import http.server
import json
import os
import signal
import sys
import textwrap
import threading
import time
import uuid

import pytest
import requests

from router.gunicorn_hooks import RegistryConfigError, registration_from_env
from router.registry import (
    Instance,
    Registration,
    deregister,
    drained_key,
    healthy_instances,
    instance_key,
    instances,
    make_instance_id,
    probe,
    server_key,
)
from strangler.stack import procs


def test_server_key_is_the_exact_traefik_path():
    assert (
        server_key("users", "web1-5001-a1b2c3")
        == "traefik/http/services/users/loadbalancer/servers/web1-5001-a1b2c3/url"
    )


def test_instance_key_is_the_exact_registry_path():
    assert instance_key("users", "web1-5001-a1b2c3") == "strangler/instances/users/web1-5001-a1b2c3"


@pytest.mark.parametrize("bad", ["", "a/b", " users"])
def test_keys_refuse_segments_that_would_shift_the_path(bad):
    with pytest.raises(ValueError):
        server_key(bad, "id")
    with pytest.raises(ValueError):
        instance_key("users", bad)


def test_instance_id_is_host_port_random_and_key_safe():
    assert make_instance_id("http://127.0.0.1:5001", host="web1", token="abc123") == "web1-5001-abc123"
    odd = make_instance_id("http://127.0.0.1:80", host="my host/β.local", token="ff")
    assert "/" not in odd and " " not in odd
    assert odd.endswith("-80-ff")
    assert make_instance_id("http://x:1") != make_instance_id("http://x:1")


def test_instance_json_round_trips_through_its_key():
    inst = Instance("users", "h-1-aa", "http://127.0.0.1:1", "1.0", 42, "h", 1700000000.0, "/hz")
    assert Instance.from_key(instance_key("users", "h-1-aa"), inst.to_json()) == inst
    assert inst.health_url == "http://127.0.0.1:1/hz"
    assert Instance.from_key("strangler/instances/users/x", "not json") is None
    assert Instance.from_key("strangler/instances/users/x/y", inst.to_json()) is None


def test_registration_from_env_is_off_without_etcd():
    assert registration_from_env({"STRANGLER_BACKEND": "users"}) is None


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"STRANGLER_ETCD": "http://127.0.0.1:1"}, "STRANGLER_BACKEND"),
        ({"STRANGLER_ETCD": "http://127.0.0.1:1", "STRANGLER_BACKEND": "users"}, "STRANGLER_INSTANCE_URL"),
        (
            {
                "STRANGLER_ETCD": "http://127.0.0.1:1",
                "STRANGLER_BACKEND": "users",
                "STRANGLER_INSTANCE_URL": "http://127.0.0.1:2",
                "STRANGLER_REGISTRY_TTL": "soon",
            },
            "STRANGLER_REGISTRY_TTL",
        ),
    ],
)
def test_registration_from_env_names_the_variable_to_fix(env, names):
    with pytest.raises(RegistryConfigError, match=names):
        registration_from_env(env)


def test_registration_from_env_reads_every_setting():
    reg = registration_from_env(
        {
            "STRANGLER_ETCD": "http://127.0.0.1:1",
            "STRANGLER_BACKEND": "users",
            "STRANGLER_REGISTRY_TTL": "7",
            "STRANGLER_HEALTH_PATH": "/up",
        },
        default_url="http://127.0.0.1:5001",
    )
    assert (reg.instance.backend, reg.instance.url, reg.ttl, reg.instance.health_path) == (
        "users",
        "http://127.0.0.1:5001",
        7,
        "/up",
    )
    assert reg.etcd.url == "http://127.0.0.1:1"


# -- against a real etcd ------------------------------------------------------

def _backend() -> str:
    return f"b{uuid.uuid4().hex[:8]}"


def _wait_gone(etcd, key, timeout):
    procs.wait_until(lambda: etcd.get(key) is None, timeout, f"removal of {key}")


@pytest.mark.integration
def test_start_puts_both_keys_on_one_lease_and_stop_removes_them_at_once(etcd_server):
    etcd = etcd_server.client()
    backend = _backend()
    reg = Registration(etcd, backend, "http://127.0.0.1:5001", version="9.9").start()
    try:
        traefik_key, mine = reg.keys
        server, described = etcd.get_entry(traefik_key), etcd.get_entry(mine)
        assert server.value == "http://127.0.0.1:5001"
        assert server.lease != 0 and server.lease == described.lease == reg.lease.id
        data = json.loads(described.value)
        assert data["url"] == "http://127.0.0.1:5001" and data["version"] == "9.9"
        assert data["pid"] == os.getpid() and data["health_path"] == "/healthz"
        assert [i.instance_id for i in instances(etcd, backend)] == [reg.instance_id]
    finally:
        reg.stop()
    assert etcd.get(traefik_key) is None and etcd.get(mine) is None
    assert instances(etcd, backend) == []


@pytest.mark.integration
def test_keep_alive_outlives_the_ttl_and_context_manager_leaves(etcd_server):
    etcd = etcd_server.client()
    with Registration(etcd, _backend(), "http://127.0.0.1:5002", ttl=2) as reg:
        time.sleep(3.5)
        assert etcd.get(reg.keys[0]) == "http://127.0.0.1:5002"
        assert reg.registrations == 1
    assert etcd.get(reg.keys[0]) is None


@pytest.mark.integration
def test_a_lapsed_lease_is_replaced_by_a_new_registration(etcd_server):
    etcd = etcd_server.client()
    with Registration(etcd, _backend(), "http://127.0.0.1:5003", ttl=3) as reg:
        first = reg.lease.id
        reg.lease.revoke()  # as if etcd had been out of reach past the TTL
        assert etcd.get(reg.keys[0]) is None
        # the keys are written before the registration counts itself: wait for the count
        procs.wait_until(lambda: reg.registrations == 2, 5, "re-registration")
        assert etcd.get(reg.keys[0]) is not None and reg.lease.id != first
        assert etcd.get_entry(reg.keys[1]).lease == reg.lease.id


@pytest.mark.integration
def test_a_deregistered_instance_leaves_at_once_and_does_not_come_back(etcd_server):
    etcd = etcd_server.client()
    backend = _backend()
    url = "http://127.0.0.1:5004"
    with Registration(etcd, backend, url, ttl=2, release="r7") as reg, \
            Registration(etcd, backend, "http://127.0.0.1:5005", ttl=2) as other:
        assert [i.release for i in instances(etcd, backend) if i.url == url] == ["r7"]
        assert deregister(etcd, backend, url) == [reg.instance_id]
        assert etcd.get(reg.keys[0]) is None and etcd.get(reg.keys[1]) is None
        assert etcd.get(drained_key(backend, reg.instance_id)) == "1"
        procs.wait_until(lambda: reg.drained, 5, "the keep-alive noticing the drain")
        time.sleep(1)  # a lapsed registration would have come back by now
        assert [i.instance_id for i in instances(etcd, backend)] == [other.instance_id]
        assert reg.registrations == 1
        assert reg.stop() is False  # nothing left to revoke
    assert deregister(etcd, backend, url) == []


@pytest.mark.integration
def test_stop_after_a_drain_its_keep_alive_has_not_seen_yet_says_nothing_was_left(etcd_server):
    """``deregister`` revoked the lease before the keep-alive's next refresh: ``stop`` finds the
    lease gone and the drained marker there, so it reports that it revoked nothing (gunicorn's
    SIGTERM hook then skips its deregister wait: the drainer already waited for Traefik)."""
    etcd = etcd_server.client()
    backend = _backend()
    with Registration(etcd, backend, "http://127.0.0.1:5006", ttl=60) as drained, \
            Registration(etcd, backend, "http://127.0.0.1:5007", ttl=60) as live:
        assert deregister(etcd, backend, "http://127.0.0.1:5006") == [drained.instance_id]
        assert drained.drained is False  # its keep-alive refreshes only every 20 s
        assert drained.stop() is False and drained.drained is True
        assert live.stop() is True  # this one it did revoke
        assert instances(etcd, backend) == []


@pytest.mark.integration
def test_a_killed_process_vanishes_within_the_ttl(etcd_server, tmp_path):
    etcd = etcd_server.client()
    backend = _backend()
    script = textwrap.dedent(
        f"""
        import time
        from router.etcd import Etcd
        from router.registry import Registration
        Registration(Etcd({etcd_server.url!r}), {backend!r}, "http://127.0.0.1:5004", ttl=2).start()
        print("registered", flush=True)
        time.sleep(60)
        """
    )
    child = procs.Proc("registrant", [sys.executable, "-c", script], tmp_path / "r.log").start()
    try:
        procs.wait_until(lambda: len(instances(etcd, backend)) == 1, 15, "registrant", proc=child)
        (inst,) = instances(etcd, backend)
        assert inst.pid == child.pid
        os.kill(child.pid, signal.SIGKILL)
        child.popen.wait(5)
        killed = time.monotonic()
        _wait_gone(etcd, server_key(backend, inst.instance_id), 6)
        # etcd rounds short TTLs up a little; the point is "seconds, not forever".
        assert time.monotonic() - killed < 5
        assert instances(etcd, backend) == []
    finally:
        child.stop()


@pytest.fixture(scope="module")
def tiny_backend():
    """A tiny HTTP backend: /healthz answers 200, anything else its own name."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"ok" if self.path == "/healthz" else b"tiny backend"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_healthy_instances_probe_each_instance(etcd_server, tiny_backend):
    etcd = etcd_server.client()
    backend = _backend()
    dead = f"http://127.0.0.1:{procs.free_port()}"
    with Registration(etcd, backend, tiny_backend) as live, Registration(etcd, backend, dead):
        assert len(healthy_instances(etcd, backend, check=False)) == 2
        assert [i.instance_id for i in healthy_instances(etcd, backend)] == [live.instance_id]


@pytest.mark.integration
def test_a_registered_backend_is_reachable_through_traefik(traefik_server, tiny_backend):
    etcd = traefik_server.etcd.client()
    backend = _backend()
    etcd.txn(
        puts={
            f"traefik/http/routers/{backend}/rule": f"PathPrefix(`/{backend}`)",
            f"traefik/http/routers/{backend}/service": backend,
        }
    )
    url = f"{traefik_server.web_url}/{backend}/x"
    with Registration(etcd, backend, tiny_backend):
        traefik_server.api.wait_live({backend: backend}, timeout=10)
        assert requests.get(url, timeout=2).text == "tiny backend"
    # Lease revoked: the service has no server left, so Traefik stops routing to it.
    procs.wait_until(lambda: requests.get(url, timeout=2).status_code != 200, 10, "deregistration in Traefik")


APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""
CONFIG = "from router.gunicorn_hooks import when_ready, on_exit  # noqa: F401\n"


@pytest.mark.integration
def test_gunicorn_master_registers_once_and_leaves_on_exit(etcd_server, tmp_path):
    etcd = etcd_server.client()
    backend = _backend()
    (tmp_path / "tinyapp.py").write_text(APP)
    (tmp_path / "gconf.py").write_text(CONFIG)
    port = procs.free_port()
    env = {
        "STRANGLER_ETCD": etcd_server.url,
        "STRANGLER_BACKEND": backend,
        "STRANGLER_REGISTRY_TTL": "3",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()]),
    }
    argv = [procs.find_binary("gunicorn"), "-c", "gconf.py", "-w", "2", "-b", f"127.0.0.1:{port}", "tinyapp:app"]
    server = procs.Proc("gunicorn", argv, tmp_path / "g.log", env=env, cwd=str(tmp_path)).start()
    try:
        procs.wait_until(lambda: procs.http_ok(f"http://127.0.0.1:{port}/"), 20, "gunicorn", proc=server)
        procs.wait_until(lambda: instances(etcd, backend), 10, "registration", proc=server)
        time.sleep(0.5)  # both workers are up by now; neither may register on its own
        (inst,) = instances(etcd, backend)
        assert inst.url == f"http://127.0.0.1:{port}" and inst.pid == server.pid
        assert f"registered {backend} as {inst.instance_id}" in server.log_tail(50)
        assert server.stop(timeout=10) == "terminated"
        assert instances(etcd, backend) == []  # revoked on exit, not left to expire
        # it ends at once after on_exit (no interpreter teardown), yet with status 0 and its log flushed
        assert server.popen.returncode == 0
        assert server.log_tail(5).rstrip().endswith(f"left the registry as {inst.instance_id}")
    finally:
        server.stop()


@pytest.mark.integration
def test_a_gunicorn_master_drained_first_stops_without_its_deregister_wait(etcd_server, tmp_path):
    """Drained by someone else (as ``down``, ``scale`` and upgrades do: they wait for Traefik to
    drop it first), the master does not sleep STRANGLER_DEREGISTER_WAIT before stopping: with a
    wait of 60 s it still ends on SIGTERM within a 10 s grace, and says it left nothing."""
    etcd = etcd_server.client()
    backend = _backend()
    (tmp_path / "tinyapp.py").write_text(APP)
    (tmp_path / "gconf.py").write_text(CONFIG)
    port = procs.free_port()
    env = {"STRANGLER_ETCD": etcd_server.url, "STRANGLER_BACKEND": backend, "STRANGLER_DEREGISTER_WAIT": "60",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    argv = [procs.find_binary("gunicorn"), "-c", "gconf.py", "-w", "1", "-b", f"127.0.0.1:{port}", "tinyapp:app"]
    server = procs.Proc("gunicorn", argv, tmp_path / "g.log", env=env, cwd=str(tmp_path)).start()
    try:
        procs.wait_until(lambda: instances(etcd, backend), 20, "registration", proc=server)
        assert deregister(etcd, backend, f"http://127.0.0.1:{port}") != []
        assert server.stop(timeout=10) == "terminated"
        assert "; stopping" not in server.log_tail(50)
    finally:
        server.stop()


@pytest.mark.integration
def test_gunicorn_without_strangler_etcd_serves_alone(tmp_path):
    (tmp_path / "tinyapp.py").write_text(APP)
    (tmp_path / "gconf.py").write_text(CONFIG)
    port = procs.free_port()
    env = {k: "" for k in os.environ if k.startswith("STRANGLER_")}
    env["STRANGLER_BACKEND"] = "users"  # set, but without STRANGLER_ETCD nothing registers
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), os.getcwd()])
    argv = [procs.find_binary("gunicorn"), "-c", "gconf.py", "-b", f"127.0.0.1:{port}", "tinyapp:app"]
    server = procs.Proc("gunicorn", argv, tmp_path / "g.log", env=env, cwd=str(tmp_path)).start()
    try:
        procs.wait_until(lambda: procs.http_ok(f"http://127.0.0.1:{port}/"), 20, "gunicorn", proc=server)
        assert "registered" not in server.log_tail(50)
    finally:
        assert server.stop(timeout=10) == "terminated"


def test_a_blue_green_set_registers_its_url_under_its_own_service_and_its_description_under_the_backend():
    env = {"STRANGLER_ETCD": "http://127.0.0.1:1", "STRANGLER_BACKEND": "users",
           "STRANGLER_INSTANCE_URL": "http://127.0.0.1:5", "STRANGLER_SERVICE": "users-green"}
    registration = registration_from_env(env)
    traefik, mine = registration.keys
    assert traefik.startswith("traefik/http/services/users-green/loadbalancer/servers/")
    assert mine.startswith("strangler/instances/users/")
    inst = registration.instance._replace(started=1.0)
    assert Instance.from_key(mine, inst.to_json()).traefik_service == "users-green"
    plain = registration_from_env({**env, "STRANGLER_SERVICE": "users"}).instance
    key = instance_key("users", plain.instance_id)
    assert Instance.from_key(key, plain.to_json()) == plain and plain.traefik_service == "users"


def test_a_probe_on_a_keep_alive_connection_the_instance_closed_asks_again_on_a_new_one():
    """gunicorn closes an idle keep-alive connection after 2 s; a probe sent on it just then gets
    no answer at all. That is not an unhealthy instance: the probe asks once more."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    served: list[str] = []

    def serve() -> None:
        for _ in range(2):  # the first connection: one answer, then closed as the next request arrives
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                served.append("answered")
                if len(served) == 1:
                    connection.recv(65536)  # the second probe, on the kept-alive connection
                    served.append("closed unanswered")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    instance = Instance(backend="stale", instance_id="stale-1", url=f"http://127.0.0.1:{port}")
    try:
        assert probe(instance, 3.0)
        assert probe(instance, 3.0)  # reuses the first connection, which closes; then a new one
        thread.join(5)
        assert served == ["answered", "closed unanswered", "answered"]
    finally:
        listener.close()
