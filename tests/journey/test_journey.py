"""The whole journey on someone else's Flask app, as its owner types it.

Shelf (tests/journey/shelf, a typical user's app) in a fresh folder:
init -> scan -> up -> compare -> new service -> up again (it starts the
service) -> compare -> flip -> rollback -> down, every step through the
real ``strangler`` command and real etcd, Traefik, Redis and gunicorn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from platform_stack import STRANGLER, free_ports_plan
from platform_stack import down as force_down

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shelf_project import make_project  # noqa: E402

pytestmark = pytest.mark.integration


def strangler(project: Path, *args: str, code: int = 0) -> str:
    """Run ``strangler ARGS`` in the project folder; assert its exit status; its output."""
    result = subprocess.run([STRANGLER, *args], cwd=project, capture_output=True, text=True,
                            timeout=180, env={**os.environ, "STRANGLER_PLAN": "strangler.toml"})
    output = result.stdout + result.stderr
    assert result.returncode == code, f"strangler {' '.join(args)} -> {result.returncode}: {output}"
    return output


def state(project: Path) -> dict:
    return json.loads((project / "run" / "state.json").read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("journey"))
    yield project
    force_down(project / "run")


@pytest.fixture(scope="module")
def reader():
    """A browser-like client: it keeps the session cookie Shelf sets."""
    with requests.Session() as session:
        yield session


def test_1_init_writes_the_plan_and_scan_finds_nothing_new(project):
    output = strangler(project, "init", "--app", "shelf:create_app")
    assert "wrote strangler.toml" in output and "strangler up --detach" in output
    free_ports_plan(project / "strangler.toml", (project / "strangler.toml").read_text())
    assert "inventory up to date" in strangler(project, "scan")


def test_2_up_serves_the_app_through_traefik_with_its_forms_and_session(project, reader):
    strangler(project, "up", "--detach")
    web = state(project)["web"]
    assert reader.post(f"{web}/auth/register", data={"name": "ann", "password": "pw"}).ok
    assert reader.post(f"{web}/auth/login", data={"name": "ann", "password": "pw"}).url == f"{web}/"
    assert reader.post(f"{web}/books/new", data={"title": "Dune", "author": "Herbert"}).ok
    assert requests.get(f"{web}/api/books", timeout=5).json()["books"][0]["title"] == "Dune"


def test_3_compare_the_monolith_with_itself_is_the_same(project):
    assert "SAME GET /api/books" in strangler(project, "compare", "GET /api/books", "--against", "monolith")


def test_4_new_service_is_planned_started_by_up_and_registered(project):
    strangler(project, "new", "service", "books", "--endpoints", "GET /api/books", "books.get_book")
    assert "plan OK: 10 endpoints, 2 backends" in strangler(project, "plan", "check")
    strangler(project, "down")  # a running stack starts no new backend: up again
    strangler(project, "up", "--detach")
    status = json.loads(strangler(project, "status", "--json"))
    books = next(row for row in status["backends"] if row["backend"] == "books")
    assert books["state"] == "1/1 healthy", books


def test_5_compare_reports_the_501s_as_differences(project):
    output = strangler(project, "compare", "GET /api/books/1", "--against", "books", code=1)
    assert "status 200 -> 501" in output
    requests_file = project / "requests.txt"
    requests_file.write_text("GET /api/books\nGET /api/books/1\n")
    report = json.loads(strangler(project, "compare", "--file", str(requests_file), "--against", "books",
                                  "--json", code=1))
    assert report["differing"] == 2
    assert {r["right"]["status"] for r in report["results"]} == {501}


def test_6_flip_moves_the_endpoints_and_the_session_still_works(project, reader):
    strangler(project, "flip", "--service", "books", "--to", "books")
    web = state(project)["web"]
    assert requests.get(f"{web}/api/books", timeout=5).status_code == 501
    # the forms stay on the monolith; the secrets survive up/down, so the cookie does too
    page = reader.get(f"{web}/books/new", timeout=5)
    assert page.status_code == 200 and "Add a book" in page.text


def test_7_rollback_brings_them_back(project):
    strangler(project, "rollback")
    web = state(project)["web"]
    assert requests.get(f"{web}/api/books", timeout=5).json()["books"][0]["author"] == "Herbert"


def test_8_down_stops_everything(project):
    pids = [i["pid"] for b in state(project)["backends"].values() for i in b["instances"]]
    output = strangler(project, "down")
    assert "books.0" in output and "monolith.0" in output
    assert not (project / "run" / "state.json").exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
