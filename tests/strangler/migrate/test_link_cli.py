"""`strangler link SERVICE`: what `up` does to a service's data, as a verb for any deployment.

Real etcd, real databases (SQLite and PostgreSQL: the compose engine).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from migrate_helpers import close_monolith, databases, monolith_app, populate, rows, write_plan
from migrate_helpers import run as migrate

from datalink.ids import lane_of
from strangler.cli import cli
from strangler.links import read_links

pytestmark = pytest.mark.integration


def link(plan, etcd_url: str, *args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["link", *args, "--plan", str(plan), "--etcd", etcd_url], env=env)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_link_copies_records_and_gives_lanes_then_catches_up(engine, tmp_path, etcd_server):
    with databases(tmp_path, engine, engine) as urls:
        plan = write_plan(tmp_path, urls)
        app = monolith_app(urls["monolith"], tmp_path)
        try:
            populate(app.test_client(), users=3, messages=0)
        finally:
            close_monolith(app)
        etcd = etcd_server.client()
        etcd.delete_prefix("strangler/data/links/")
        first = link(plan, etcd_server.url, "users")
        assert first.exit_code == 0, first.output
        assert "data: linked users with monolith (users 3 rows copied" in first.output
        record = read_links(etcd)["users"]
        assert record["tables"] == ["users"] and record["rows"] == 3
        assert record["lanes"] == {"monolith": list(lane_of(0)), "users": list(lane_of(1))}
        assert len(rows(urls["users"], "users")) == 3
        assert migrate(plan, "verify", "users").exit_code == 0
        again = link(plan, etcd_server.url, "users")
        assert again.exit_code == 0 and "caught up 0 row(s)" in again.output
        assert json.loads(etcd.get("strangler/data/links/users"))["linked_at"] == record["linked_at"]


def test_link_refuses_what_owns_no_data_and_a_running_local_stack(tmp_path, etcd_server):
    with databases(tmp_path, "sqlite", "sqlite") as urls:
        plan = write_plan(tmp_path, urls)
        result = link(plan, etcd_server.url, "tokens")
        assert result.exit_code == 2 and "service 'tokens' owns no data" in result.output
        result = link(plan, etcd_server.url, "nope")
        assert result.exit_code == 2 and "unknown service 'nope'" in result.output
        result = link(plan, etcd_server.url, "users", "--database", "users")
        assert result.exit_code == 2 and "'users': write NAME=URL" in result.output
        result = link(plan, etcd_server.url, "users", "--database", "nope=sqlite:///x")
        assert result.exit_code == 2 and "'nope' is not a backend of the plan" in result.output
        for url, message in (("garbage", "not a database URL"), ("postgresql+nodriver://u@h/db", "nodriver"),
                             ("mysql+nosuchdbapi://u@h/db", "nosuchdbapi")):
            result = link(plan, etcd_server.url, "users", "--database", f"users={url}")
            assert result.exit_code == 2 and message in result.output, result.output
            assert len(result.output.strip().splitlines()) == 1
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "state.json").write_text(json.dumps({"etcd": etcd_server.url}))
        result = link(plan, etcd_server.url, "users")
        assert result.exit_code == 1 and "`strangler up` links its services' data itself" in result.output


def test_the_deployments_databases_replace_the_plans_and_several_services_link_at_once(tmp_path, etcd_server):
    """As compose runs it: the plan names other databases; the deployment's come in the environment."""
    with databases(tmp_path, "sqlite", "sqlite") as urls:
        plan = write_plan(tmp_path, {name: f"sqlite:///{tmp_path}/elsewhere-{name}.sqlite" for name in urls})
        app = monolith_app(urls["monolith"], tmp_path)
        try:
            populate(app.test_client(), users=2, messages=3)
        finally:
            close_monolith(app)
        etcd_server.client().delete_prefix("strangler/data/links/")
        given = " ".join(f"{name}={url}" for name, url in urls.items())
        result = link(plan, etcd_server.url, "users", "messages", env={"STRANGLER_LINK_DATABASE": given})
        assert result.exit_code == 0, result.output
        assert "users: linked with monolith" in result.output and "messages: linked" in result.output, result.output
        for table in ("users", "messages"):
            copied = rows(urls[table], table)
            assert copied and copied == rows(urls["monolith"], table)
        assert not list(tmp_path.glob("elsewhere-*"))  # the plan's own URLs were never used
        assert set(read_links(etcd_server.client())) >= {"users", "messages"}
