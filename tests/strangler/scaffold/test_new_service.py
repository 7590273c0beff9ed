"""`strangler new service` and `strangler migrate revision` through the real CLI, on Shelf."""

import fcntl
import importlib.util
import sqlite3
import sys
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from datalink.locks import default_lock_path
from strangler.cli import cli
from strangler.plan import load_plan
from strangler.stack import procs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "journey"))
from shelf_project import make_project  # noqa: E402


def run(project: Path, *args: str):
    return CliRunner().invoke(cli, [*args, "--plan", str(project / "strangler.toml")])


@pytest.fixture
def project(tmp_path):
    project = make_project(tmp_path)
    assert run(project, "init", "--app", "shelf:create_app").exit_code == 0
    return project


def load_service(project: Path, name: str):
    """The scaffold's package, imported from its folder (as gunicorn would, from the project)."""
    folder = project / "extracted" / name
    spec = importlib.util.spec_from_file_location(f"scaffold_{name}", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_new_service_is_scaffolded_answers_501_and_the_plan_still_checks(project):
    result = run(project, "new", "service", "books", "--endpoints", "GET /api/books",
                 "books.get_book")
    assert result.exit_code == 0, result.output
    assert run(project, "plan", "check").exit_code == 0
    backend = load_plan(project / "strangler.toml").backends["books"]
    assert [str(ep) for ep in backend.endpoints] == ["GET /api/books", "GET /api/books/<book_id>"]
    assert backend.command == ("gunicorn -c extracted/books/gunicorn_conf.py --bind {host}:{port} "
                               "extracted.books.wsgi:app")
    assert backend.health == "/healthz" and backend.database is None
    for name in ("__init__.py", "views.py", "wsgi.py", "gunicorn_conf.py"):
        assert (project / "extracted" / "books" / name).is_file()
    assert (project / "extracted" / "__init__.py").is_file()
    assert not (project / "migrations").exists()
    client = load_service(project, "books").create_app({"TESTING": True}).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok", "service": "books"}
    answer = client.get("/api/books/7")
    assert answer.status_code == 501
    assert answer.get_json() == {"error": "not implemented yet", "endpoint": "GET /api/books/<book_id>"}
    assert client.post("/api/books").status_code == 405  # only the endpoints it owns


def test_views_share_a_function_per_monolith_view_and_prefixes_catch_everything(project):
    result = run(project, "new", "service", "accounts", "--endpoints",
                 "GET /auth/register, POST /auth/register", "--endpoints", "PREFIX /files/")
    assert result.exit_code == 0, result.output
    views = (project / "extracted" / "accounts" / "views.py").read_text()
    assert '@bp.route("/auth/register", methods=["GET", "POST"])\ndef register():' in views
    client = load_service(project, "accounts").create_app().test_client()
    assert client.post("/auth/register").status_code == 501
    assert client.delete("/files/a/b.txt").get_json()["endpoint"] == "PREFIX /files/"
    assert client.get("/files/").status_code == 501


@pytest.mark.parametrize(("args", "message"), [
    (["monolith", "--endpoints", "GET /api/books"], "already has a backend 'monolith'"),
    (["Books", "--endpoints", "GET /api/books"], "NAME 'Books': use lower-case"),
    (["books", "--endpoints", "GET /api/bookz"], 'did you mean "GET /api/books"'),
    (["books", "--endpoints", "DELETE /api/books"], "is not an endpoint of the monolith"),
    (["books-api", "--endpoints", "GET /api/books"], "the Python package extracted.books-api"),
    (["class", "--endpoints", "GET /api/books"], "not a Python keyword"),
    (["b" * 300, "--endpoints", "GET /api/books"], "at most 63 characters"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(project, args, message):
    before = (project / "strangler.toml").read_text()
    result = run(project, "new", "service", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert (project / "strangler.toml").read_text() == before
    assert not (project / "extracted").exists()


def test_a_failure_midway_leaves_no_partial_service_and_no_plan_edit(project):
    """migrations is a file: extracted/readers/ is written before migrations/readers/ fails."""
    database = project / "instance" / "shelf.sqlite"
    database.parent.mkdir()
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE readers (id INTEGER PRIMARY KEY, name TEXT, updated_at TEXT)")
    plan_file = project / "strangler.toml"
    plan_file.write_text(plan_file.read_text().replace('# database = "sqlite:///..."',
                                                       f'database = "sqlite:///{database}"'))
    before = plan_file.read_text()
    (project / "migrations").write_text("in the way\n")
    result = run(project, "new", "service", "readers", "--endpoints", "GET /auth/login", "--tables", "readers")
    assert result.exit_code == 2 and "nothing was written" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (project / "extracted").exists()
    assert plan_file.read_text() == before
    assert sorted(p.name for p in project.iterdir() if p.name.startswith(".strangler")) == []


def test_an_existing_folder_is_never_overwritten(project):
    (project / "extracted" / "books").mkdir(parents=True)
    result = run(project, "new", "service", "books", "--endpoints", "GET /api/books")
    assert result.exit_code == 2 and "extracted/books exists" in result.output


def test_tables_bring_models_read_from_the_monolith_and_a_migration_made_by_alembic(project):
    database = project / "instance" / "shelf.sqlite"
    database.parent.mkdir()
    with sqlite3.connect(database) as connection:
        connection.executescript("CREATE TABLE readers (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                                 " name TEXT UNIQUE NOT NULL, password TEXT NOT NULL);"
                                 "INSERT INTO readers (name, password) VALUES ('ann', 'x');")
    plan_file = project / "strangler.toml"
    plan_file.write_text(plan_file.read_text().replace('# database = "sqlite:///..."',
                                                       f'database = "sqlite:///{database}"'))
    result = run(project, "new", "service", "readers", "--endpoints", "GET /auth/login",
                 "--tables", "readers")
    assert result.exit_code == 0, result.output
    assert "note: readers has no updated_at column" in result.output
    assert run(project, "plan", "check").exit_code == 0
    entry = tomllib.loads(plan_file.read_text())["backends"]["readers"]
    assert entry["tables"] == ["readers"] and entry["migrations"] == "migrations/readers"
    models = (project / "extracted" / "readers" / "models.py").read_text()
    assert 'sa.Column("name", sa.Text(), nullable=False)' in models

    made = run(project, "migrate", "revision", "--db", "readers", "-m", "initial", "--autogenerate")
    assert made.exit_code == 0, made.output
    scripts = list((project / "migrations" / "readers" / "versions").glob("*_initial.py"))
    assert len(scripts) == 1 and "op.create_table('readers'" in scripts[0].read_text()
    upgraded = run(project, "migrate", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert "monolith: no alembic environment, left alone" in upgraded.output
    copied = run(project, "migrate", "copy", "readers")
    assert copied.exit_code == 0, copied.output
    assert run(project, "migrate", "verify", "readers").exit_code == 0
    again = run(project, "migrate", "revision", "--db", "readers", "-m", "nothing new", "--autogenerate")
    assert again.exit_code == 0
    assert "op." not in next((project / "migrations" / "readers" / "versions").glob("*_nothing_new.py"))\
        .read_text().split("def upgrade")[1].split("def downgrade")[0]


def test_a_table_name_is_never_written_into_code_as_it_came(project):
    """models.py names each table in a string literal: a quote in --tables ran code on import."""
    database = project / "instance" / "shelf.sqlite"
    database.parent.mkdir()
    sqlite3.connect(database).close()
    plan_file = project / "strangler.toml"
    plan_file.write_text(plan_file.read_text().replace('# database = "sqlite:///..."',
                                                       f'database = "sqlite:///{database}"'))
    before = plan_file.read_text()
    for table in ('x"); import os; ("', "a b", "1st", "t" * 64):
        result = run(project, "new", "service", "readers", "--endpoints", "GET /auth/login", "--tables", table)
        assert result.exit_code == 2 and "a table name is letters" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not (project / "extracted").exists() and plan_file.read_text() == before


def test_a_broken_models_file_fails_autogenerate_in_one_line_writing_nothing(project):
    database = project / "instance" / "shelf.sqlite"
    database.parent.mkdir()
    sqlite3.connect(database).close()
    plan_file = project / "strangler.toml"
    plan_file.write_text(plan_file.read_text().replace('# database = "sqlite:///..."',
                                                       f'database = "sqlite:///{database}"'))
    assert run(project, "new", "service", "readers", "--endpoints", "GET /auth/login",
               "--tables", "readers").exit_code == 0
    models = project / "extracted" / "readers" / "models.py"
    models.write_text(models.read_text() + "\nundefined_name.attribute\n")
    result = run(project, "migrate", "revision", "--db", "readers", "-m", "x", "--autogenerate")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception  # no traceback
    (line,) = result.output.strip().splitlines()
    assert "NameError" in line and "models.py:" in line, line
    assert [p.name for p in (project / "migrations" / "readers" / "versions").iterdir()] == [".keep"]


def test_tables_need_the_monolith_database_to_come_from(project):
    result = run(project, "new", "service", "readers", "--endpoints", "GET /auth/login", "--tables", "readers")
    assert result.exit_code == 2 and "the plan gives the monolith no database" in result.output
    assert not (project / "extracted").exists()


def test_migrate_revision_refuses_what_it_cannot_do(project):
    no_env = run(project, "migrate", "revision", "--db", "monolith", "-m", "x")
    assert no_env.exit_code == 2 and "has no database in the plan" in no_env.output
    unknown = run(project, "migrate", "revision", "--db", "nope", "-m", "x")
    assert unknown.exit_code == 2 and "unknown database 'nope'" in unknown.output
    assert run(project, "migrate", "revision", "--db", "monolith").exit_code == 2  # -m is required


@pytest.mark.parametrize("message", ['a""" + oops', "C:\\new", "\\N", "two\nlines", "x" * 201])
def test_a_revision_message_that_would_break_its_script_is_refused(project, message):
    """The message goes into the script's docstring: a quote or a backslash there made a script
    no later migrate command could load (a SyntaxError each time)."""
    database = project / "instance" / "shelf.sqlite"
    database.parent.mkdir()
    sqlite3.connect(database).close()
    plan_file = project / "strangler.toml"
    plan_file.write_text(plan_file.read_text().replace('# database = "sqlite:///..."',
                                                       f'database = "sqlite:///{database}"'))
    assert run(project, "new", "service", "readers", "--endpoints", "GET /auth/login",
               "--tables", "readers").exit_code == 0
    versions = project / "migrations" / "readers" / "versions"
    result = run(project, "migrate", "revision", "--db", "readers", "-m", message)
    assert result.exit_code == 2 and "-m" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert [p.name for p in versions.iterdir()] == [".keep"]
    fine = run(project, "migrate", "revision", "--db", "readers", "-m", "add readers.email")
    assert fine.exit_code == 0, fine.output
    assert run(project, "migrate", "upgrade", "--db", "readers").exit_code == 0


@pytest.mark.integration
def test_a_service_on_sqlite_migrates_under_the_lock_strangler_migrate_takes(project, tmp_path):
    """Two instances (or an instance and strangler migrate) on one SQLite file take turns: the
    scaffold's gunicorn start waits for the lock beside the file (it took none on SQLite)."""
    database = project / "instance" / "shelf.sqlite"
    database.parent.mkdir()
    sqlite3.connect(database).close()
    plan_file = project / "strangler.toml"
    plan_file.write_text(plan_file.read_text().replace('# database = "sqlite:///..."',
                                                       f'database = "sqlite:///{database}"'))
    assert run(project, "new", "service", "readers", "--endpoints", "GET /auth/login",
               "--tables", "readers").exit_code == 0
    url = f"sqlite:///{tmp_path / 'readers.sqlite'}"
    port = procs.free_port()
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    env = {"DATABASE_URL": url, "STRANGLER_ETCD": ""}  # no registry: only the start is watched
    health = f"http://127.0.0.1:{port}/healthz"
    with open(default_lock_path(url), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a migration of that file is under way elsewhere
        proc = procs.Proc("readers", [gunicorn, "-c", "extracted/readers/gunicorn_conf.py", "--bind",
                                      f"127.0.0.1:{port}", "extracted.readers.wsgi:app"],
                          tmp_path / "readers.log", env=env, cwd=str(project)).start()
        try:
            deadline = time.monotonic() + 4  # bounded: it must still be waiting for the lock then
            while time.monotonic() < deadline:
                assert proc.alive(), (tmp_path / "readers.log").read_text()
                assert not procs.http_ok(health), "it started (and migrated) while the lock was held"
                time.sleep(0.2)
            fcntl.flock(held, fcntl.LOCK_UN)
            procs.wait_until(lambda: procs.http_ok(health), 30, "the readers service", proc=proc)
        finally:
            proc.stop()
    with sqlite3.connect(tmp_path / "readers.sqlite") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert "alembic_version" in tables  # it did migrate, once the lock was free
