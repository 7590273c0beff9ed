"""docker-compose.yml against the plan, structurally (no Docker engine here).

It must parse; every started plan backend has a service running the plan's
command (``{host}`` 0.0.0.0, ``{port}`` the container port) with the
environment ``strangler up`` would give it, a health check on its health
path and the platform as dependencies; etcd, Traefik, Redis and the database
are there with health checks; only Traefik publishes ports; every file it
references exists. The control plane (etcd, Redis, the database) is on an
internal network only, with credentials from .env that every client gets
from its environment (.env.example lists them, empty); Redis's command and
health check run here for real, and docker/etcd-auth.sh is run against a
real etcd in tests/router/test_etcd_auth.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from router.traefik import static_config, static_env
from strangler.plan import Plan, load_plan
from strangler.stack.data import write_through
from strangler.stack.lifecycle import backend_launches, procs

REPO = Path(__file__).resolve().parents[2]
CONTAINER_PORT = 5000
PLATFORM = ("etcd", "redis", "db", "traefik")
ONE_SHOTS = ("etcd-init", "routes", "link")
TOOLKIT = ("controller",)  # the toolkit's own long-running processes
CONTROL = ("etcd", "redis", "db")  # the control plane: internal network only
SECRETS = ("SECRET_KEY", "JWT_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "ETCD_ROOT_PASSWORD",
           "ETCD_STRANGLER_PASSWORD", "ETCD_TRAEFIK_PASSWORD")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_plan(REPO / "strangler.toml")


def started(plan: Plan) -> list[str]:
    return [name for name, backend in plan.backends.items() if backend.start]


def interpolate(value: str) -> str:
    """What compose makes of ``${VAR:?message}`` / ``${VAR:-default}`` with VAR set to ``<VAR>``."""
    return re.sub(r"\$\{(\w+)(?::[-?][^}]*)?\}", r"<\1>", value)


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_compose_parses_and_has_the_platform_with_healthchecks(compose: dict) -> None:
    services = compose["services"]
    for name in PLATFORM:
        assert name in services, f"no {name} service"
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_every_started_backend_has_a_service_running_the_plans_command(compose: dict, plan: Plan) -> None:
    services = compose["services"]
    for name in started(plan):
        assert name in services, f"plan backend {name} has no compose service"
        expected = shlex.split(plan.command(name, port=CONTAINER_PORT, host="0.0.0.0"))
        assert argv(services[name]["command"]) == expected, name
    extra = set(services) - set(plan.backends) - set(PLATFORM) - set(ONE_SHOTS) - set(TOOLKIT)
    assert not extra, f"compose services the plan does not know: {extra}"


def test_backend_environment_matches_what_strangler_up_sets(compose: dict, plan: Plan) -> None:
    ports = {name: [CONTAINER_PORT] for name in started(plan)}
    launches = backend_launches(plan, ports, etcd_url="http://etcd:2379", redis_url="redis://redis:6379/0",
                                secrets={"SECRET_KEY": "s", "JWT_SECRET_KEY": "j"}, lb_url="http://traefik:8001")
    web_port = plan.stack.web_port
    for launch in launches:
        env = {k: interpolate(str(v)) for k, v in compose["services"][launch.backend]["environment"].items()}
        # each replica registers its own address (docker/entrypoint.sh), not one fixed URL
        wanted = set(launch.env) - {"STRANGLER_INSTANCE_URL"}
        assert wanted <= set(env), f"{launch.backend} lacks {wanted - set(env)}"
        assert env["STRANGLER_BACKEND"] == launch.backend
        assert env["STRANGLER_HEALTH_PATH"] == launch.health_path
        assert env["STRANGLER_ETCD"] == "http://etcd:2379"
        # services call each other through the internal entrypoint, never the public one
        assert env["STRANGLER_LB_URL"] == f"http://traefik:{plan.stack.internal_port}"
        assert plan.stack.internal_port != web_port
        assert env["SOCKETIO_MESSAGE_QUEUE"] == "redis://:<REDIS_PASSWORD>@redis:6379/0"
        assert env["STRANGLER_ETCD_USER"] == "strangler"
        assert env["STRANGLER_ETCD_PASSWORD"] == "<ETCD_STRANGLER_PASSWORD>"
        assert env["PORT"] == str(CONTAINER_PORT)
        assert env["STRANGLER_ENV"] == "production"  # so a missing secret is an error, not a default
        for secret in ("SECRET_KEY", "JWT_SECRET_KEY"):
            assert env[secret] == f"<{secret}>", f"{launch.backend}: {secret} must come from the environment"
        has_database = plan.database_url(launch.backend) is not None
        assert ("DATABASE_URL" in env) == has_database, launch.backend
        if has_database:
            url = env["DATABASE_URL"]
            assert url.startswith("postgresql") and "@db:5432/" in url
            # the image has psycopg2 (pyproject); SQLAlchemy 2.1 takes postgresql:// as psycopg 3
            make_url(url).get_dialect().import_dbapi()


def test_each_owner_of_data_gets_its_own_database(compose: dict, plan: Plan) -> None:
    services = compose["services"]
    owners = [name for name in started(plan) if plan.database_url(name)]
    names = [services[name]["environment"]["DATABASE_URL"].rsplit("/", 1)[1] for name in owners]
    assert len(set(names)) == len(owners), names
    created = (REPO / "docker/postgres-init.sql").read_text()
    default = services["db"]["environment"]["POSTGRES_DB"]
    for database in names:
        assert database == default or f"CREATE DATABASE {database};" in created, database


def test_backends_are_health_checked_on_their_plan_path_and_wait_for_the_platform(compose: dict,
                                                                                  plan: Plan) -> None:
    services = compose["services"]
    for name in started(plan):
        service = services[name]
        check = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{CONTAINER_PORT}{plan.backend(name).health}" in check, name
        depends = service["depends_on"]
        assert depends["etcd"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["routes"]["condition"] == "service_completed_successfully", name
        if plan.database_url(name):
            assert depends["db"]["condition"] == "service_healthy", name
        else:
            assert "db" not in depends, f"{name} has no database; it should not wait for one"
    assert services["traefik"]["depends_on"]["etcd"]["condition"] == "service_healthy"


def test_only_traefik_publishes_ports_and_they_are_the_plans(compose: dict, plan: Plan) -> None:
    published = {name for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"traefik"}
    ports = compose["services"]["traefik"]["ports"]
    assert f"{plan.stack.web_port}:{plan.stack.web_port}" in ports
    assert f"127.0.0.1:{plan.stack.dashboard_port}:{plan.stack.dashboard_port}" in ports  # loopback only


def test_traefik_config_is_the_toolkits_with_container_addresses(compose: dict, plan: Plan) -> None:
    traefik = compose["services"]["traefik"]
    assert argv(traefik["command"]) == ["traefik"] and "volumes" not in traefik  # no config file
    env = {k: interpolate(str(v)) for k, v in traefik["environment"].items()}
    expected = static_config(web_port=plan.stack.web_port, api_port=plan.stack.dashboard_port,
                             etcd_endpoints=["etcd:2379"], host="", internal_port=plan.stack.internal_port,
                             internal_host="", etcd_username="traefik",
                             etcd_password="<ETCD_TRAEFIK_PASSWORD>")
    # the API must be reachable from the toolkit's container (published on loopback only)
    expected["entryPoints"]["traefik"]["address"] = f":{plan.stack.dashboard_port}"
    assert env == static_env(expected)
    assert argv(traefik["healthcheck"]["test"]) == ["CMD", "traefik", "healthcheck"]


def test_the_controller_reads_etcd_traefiks_metrics_and_the_comparators_results(compose: dict) -> None:
    controller = compose["services"]["controller"]
    assert argv(controller["command"]) == [
        "strangler", "controller", "--etcd", "http://etcd:2379", "--traefik-metrics", "http://traefik:8081",
        "--shadow-store", "/data/shadow.sqlite"]
    assert controller["volumes"] == ["comparator-data:/data:ro"] and controller["networks"] == ["control"]
    assert "STRANGLER_ETCD_PASSWORD" in controller["environment"]


def test_strangler_diffs_reaches_the_comparator_over_http_not_its_volume(compose: dict) -> None:
    """`strangler diffs` run in the routes container (as the file's comment says) finds the comparator
    in etcd and asks it over the control network: both are on it, the toolkit logs in to etcd, and
    the comparator's results volume is mounted by nobody else but the controller, read-only."""
    services = compose["services"]
    assert "routes strangler diffs --etcd http://etcd:2379" in (REPO / "docker-compose.yml").read_text()
    assert "control" in services["routes"]["networks"] and "control" in services["comparator"]["networks"]
    assert "STRANGLER_ETCD_PASSWORD" in services["routes"]["environment"]
    assert "ports" not in services["comparator"]
    mounted = {name: v for name, s in services.items() for v in s.get("volumes", [])
               if v.startswith("comparator-data:")}
    assert mounted == {"comparator": "comparator-data:/data", "controller": "comparator-data:/data:ro"}


def test_the_routes_service_applies_the_plan_to_etcd(compose: dict) -> None:
    command = argv(compose["services"]["routes"]["command"])
    assert command[:3] == ["strangler", "plan", "apply"]
    assert command[command.index("--etcd") + 1] == "http://etcd:2379"
    assert command[command.index("--plan") + 1] == "/app/strangler.toml"


def test_every_referenced_file_exists(compose: dict) -> None:
    dockerfiles = {s["build"]["dockerfile"] for s in compose["services"].values() if "build" in s}
    assert dockerfiles == {"docker/Dockerfile"}
    dockerfile = (REPO / "docker/Dockerfile").read_text()
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"the Dockerfile copies {path}, which does not exist"
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).is_file(), source
    # programs come from the image's pip packages, or are made by the Dockerfile
    from_pip = {"gunicorn", "strangler", "etcd", "traefik"}
    for name, service in compose["services"].items():
        if "command" in service and "build" in service:
            program = argv(service["command"])[0]
            assert program in from_pip or program in dockerfile, f"{name} runs {program}, which the image lacks"
    # `pip install .` in the image builds the packages pyproject names: each must be copied in first
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {path for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, re.M) for path in source.split()}
    for pattern in packages["include"]:
        package = pattern.rstrip("*")
        assert package in copied, f"the image installs {package} without copying it (COPY {package} ./{package})"
    entrypoint = REPO / "docker/entrypoint.sh"
    assert entrypoint.read_text().startswith("#!/bin/sh") and "STRANGLER_INSTANCE_URL" in entrypoint.read_text()


def test_no_secret_is_written_into_the_compose_file(compose: dict) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for name in SECRETS:
        for value in re.findall(rf"\b{name}: (.+)", text):
            assert value.startswith("${" + name + ":?"), f"{name} is set to {value!r}; take it from .env"
    assert "requirepass" not in " ".join(argv(compose["services"]["redis"]["command"])).split("|", 1)[1]
    for service in compose["services"].values():
        for word in argv(service.get("command") or []):
            assert not re.search(r"password[=:]", word, re.I), word  # never on a command line


def test_env_example_lists_every_variable_compose_needs_and_no_value(compose: dict) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    needed = set(re.findall(r"\$\{(\w+):\?", text))
    assert needed == set(SECRETS)
    example = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert set(example) == needed
    assert all(value == "" for value in example.values()), "ship no value: compose must refuse to start"
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


def test_the_control_plane_is_on_an_internal_network_only(compose: dict, plan: Plan) -> None:
    services = compose["services"]
    assert compose["networks"]["control"]["internal"] is True
    assert not compose["networks"]["edge"].get("internal")
    for name in CONTROL:
        assert services[name]["networks"] == ["control"], name
        assert not services[name].get("ports"), name
    for name in [*started(plan), "traefik"]:  # they reach the control plane and are reached
        assert set(services[name]["networks"]) == {"control", "edge"}, name
    for name in ONE_SHOTS:
        assert services[name]["networks"] == ["control"], name
    redis = " ".join(argv(services["redis"]["command"]))
    assert "--protected-mode yes" in redis and "--protected-mode no" not in redis


def test_etcd_auth_is_turned_on_before_any_client_starts(compose: dict, plan: Plan) -> None:
    services = compose["services"]
    init = services["etcd-init"]
    assert argv(init["command"]) == ["sh", "/app/docker/etcd-auth.sh"]
    assert "./docker/etcd-auth.sh:/app/docker/etcd-auth.sh:ro" in init["volumes"]
    env = {k: interpolate(str(v)) for k, v in init["environment"].items()}
    for name in ("ETCD_ROOT_PASSWORD", "ETCD_STRANGLER_PASSWORD", "ETCD_TRAEFIK_PASSWORD"):
        assert env[name] == f"<{name}>"
    assert init["depends_on"]["etcd"]["condition"] == "service_healthy"
    for name in ("routes", "traefik"):
        assert services[name]["depends_on"]["etcd-init"]["condition"] == "service_completed_successfully"
    routes = {k: interpolate(str(v)) for k, v in services["routes"]["environment"].items()}
    assert routes == {"STRANGLER_ETCD_USER": "strangler", "STRANGLER_ETCD_PASSWORD": "<ETCD_STRANGLER_PASSWORD>"}
    script = (REPO / "docker/etcd-auth.sh").read_text()
    assert script.startswith("#!/bin/sh") and "etcdctl auth enable" in script


def shell(command: str, password: str, port: int) -> str:
    """A compose shell command as the container runs it: $$ is $, the bundled redis-server the venv's."""
    server = procs.find_binary("redis-server")
    cli = str(Path(server).with_name("redis-cli"))
    return (command.replace("$$", "$").replace("redis-server-bundled", server).replace("redis-cli", cli)
            .replace("--port 6379", f"--port {port}").replace("-p 6379", f"-p {port}"))


@pytest.mark.integration
def test_the_redis_command_and_health_check_run_with_the_password(compose: dict, tmp_path: Path) -> None:
    import subprocess

    import redis

    service = compose["services"]["redis"]
    password, port = "a-redis-password-for-tests", procs.free_port()
    env = {"PATH": "/usr/bin:/bin", "REDIS_PASSWORD": password}
    command = shell(argv(service["command"])[2], password, port).replace("0.0.0.0", "127.0.0.1")
    with (tmp_path / "redis.log").open("wb") as log:
        server = subprocess.Popen(["sh", "-c", command], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  cwd=tmp_path, start_new_session=True)
    try:
        check = shell(service["healthcheck"]["test"][1], password, port)
        procs.wait_until(lambda: subprocess.run(["sh", "-c", check], env=env).returncode == 0, 20, "redis")
        assert subprocess.run(["sh", "-c", check], env={**env, "REDIS_PASSWORD": "wrong"}).returncode != 0
        assert not procs.redis_ping(port)
        url = interpolate(compose["services"]["monolith"]["environment"]["SOCKETIO_MESSAGE_QUEUE"])
        url = url.replace("<REDIS_PASSWORD>", password).replace("redis:6379", f"127.0.0.1:{port}")
        assert redis.Redis.from_url(url).ping()
        for pid in session(server.pid):  # sh, and the redis-server it started
            assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert len(session(server.pid)) >= 2
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)


def session(sid: int) -> list[int]:
    """The PIDs in session ``sid`` (what one start_new_session Popen started)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:  # after ")": state ppid pgrp session
            found.append(int(stat.parent.name))
    return found


def test_the_link_service_links_every_data_service_before_they_start_and_they_write_through(
        compose: dict, plan: Plan) -> None:
    """As `strangler up` does locally: linked before any data backend starts, then write-through."""
    services = compose["services"]
    link = services["link"]
    command = argv(link["command"])
    assert command[:2] == ["strangler", "link"] and "--etcd" in command
    assert [c for c in command[2:] if not c.startswith(("-", "/", "http"))] == plan.data_services()
    assert link["depends_on"]["db"]["condition"] == "service_healthy"
    assert link["depends_on"]["etcd-init"]["condition"] == "service_completed_successfully"
    assert link["environment"]["STRANGLER_ETCD_USER"] == "strangler"
    given = dict(item.split("=", 1) for item in interpolate(link["environment"]["STRANGLER_LINK_DATABASE"]).split())
    urls = {name: interpolate(services[name]["environment"]["DATABASE_URL"])
            for name in (plan.monolith, *plan.data_services())}
    assert given == urls  # the databases the backends use, not the plan's SQLite files
    deployed = replace(plan, backends={n: replace(b, database=urls.get(n, b.database))
                                       for n, b in plan.backends.items()})
    expected = write_through(deployed, plan.data_services())
    for name in urls:
        env = services[name]["environment"]
        assert json.loads(interpolate(env["STRANGLER_WRITE_THROUGH"])) == expected[name], name
        assert services[name]["depends_on"]["link"]["condition"] == "service_completed_successfully", name
