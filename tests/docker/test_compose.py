"""docker-compose.yml against the plan, structurally (no Docker engine here).

It must parse; every started plan backend has a service running the plan's
command (``{host}`` 0.0.0.0, ``{port}`` the container port) with the
environment ``strangler up`` would give it, a health check on its health
path and the platform as dependencies; etcd, Traefik, Redis and the database
are there with health checks; only Traefik publishes ports; every file it
references exists.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from router.traefik import static_config
from strangler.plan import Plan, load_plan
from strangler.stack import backend_launches

REPO = Path(__file__).resolve().parents[2]
CONTAINER_PORT = 5000
PLATFORM = ("etcd", "redis", "db", "traefik")


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
    extra = set(services) - set(plan.backends) - set(PLATFORM) - {"routes"}
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
        assert env["SOCKETIO_MESSAGE_QUEUE"].startswith("redis://redis:")
        assert env["PORT"] == str(CONTAINER_PORT)
        assert env["STRANGLER_ENV"] == "production"  # so a missing secret is an error, not a default
        for secret in ("SECRET_KEY", "JWT_SECRET_KEY"):
            assert env[secret] == f"<{secret}>", f"{launch.backend}: {secret} must come from the environment"
        has_database = plan.database_url(launch.backend) is not None
        assert ("DATABASE_URL" in env) == has_database, launch.backend
        if has_database:
            assert env["DATABASE_URL"].startswith("postgresql://") and "@db:5432/" in env["DATABASE_URL"]


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
    mounted = [v.split(":")[0] for v in compose["services"]["traefik"]["volumes"]]
    assert "./docker/traefik.yml" in mounted
    config = yaml.safe_load((REPO / "docker/traefik.yml").read_text())
    expected = static_config(web_port=plan.stack.web_port, api_port=plan.stack.dashboard_port,
                             etcd_endpoints=["etcd:2379"], host="", internal_port=plan.stack.internal_port,
                             internal_host="")
    # the API must be reachable from the toolkit's container (published on loopback only)
    expected["entryPoints"]["traefik"]["address"] = f":{plan.stack.dashboard_port}"
    assert config == expected


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
    entrypoint = REPO / "docker/entrypoint.sh"
    assert entrypoint.read_text().startswith("#!/bin/sh") and "STRANGLER_INSTANCE_URL" in entrypoint.read_text()


def test_no_secret_is_written_into_the_compose_file(compose: dict) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for name in ("SECRET_KEY", "JWT_SECRET_KEY", "POSTGRES_PASSWORD"):
        for value in re.findall(rf"\b{name}: (.+)", text):
            assert value.startswith("${" + name + ":?"), f"{name} is set to {value!r}; take it from .env"
