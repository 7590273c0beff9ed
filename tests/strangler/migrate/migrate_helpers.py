"""What the migrate tests share: throw-away databases on each engine, a plan, a populated monolith."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

from click.testing import CliRunner, Result
from databases import ENGINES, SERVERS, database  # noqa: F401  (re-exported for the migrate tests)
from sqlalchemy import create_engine, text

from strangler.cli import cli


@contextlib.contextmanager
def databases(tmp_path: Path, monolith: str, service: str) -> Iterator[dict[str, str]]:
    """URLs for the monolith (engine *monolith*) and both services (engine *service*)."""
    with (database(monolith, tmp_path, "monolith") as m, database(service, tmp_path, "users") as u,
          database(service, tmp_path, "messages") as g):
        yield {"monolith": m, "users": u, "messages": g}


def write_plan(tmp_path: Path, urls: dict[str, str]) -> Path:
    """A plan with the monolith, users and messages (owning data) and tokens (owning none)."""
    lines = ['[strangler]\nrun_dir = "run"\n']
    for name, tables in (("monolith", '["users", "messages", "revoked_tokens"]'),
                         ("users", '["users"]'), ("messages", '["messages"]'), ("tokens", None)):
        lines.append(f'[backends.{name}]\ncommand = "run {{port}}"\nhealth = "/healthz"\n')
        if name == "monolith":
            lines.append('app = "monolith:create_app"\n')
        if tables:
            lines.append(f'database = "{urls[name]}"\ntables = {tables}\n')
    path = tmp_path / "strangler.toml"
    path.write_text("".join(lines))
    return path


def run(plan: Path, *args: str) -> Result:
    """``strangler migrate ARGS --plan PLAN`` through CliRunner."""
    return CliRunner().invoke(cli, ["migrate", *args, "--plan", str(plan)], catch_exceptions=False)


def one_line_error(result: Result) -> str:
    """The error of a failed command, checked to be exactly one line with no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) >= 1 and lines[-1].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[-1]


def monolith_app(url: str, tmp_path: Path):  # noqa: ANN201
    """The real monolith app on *url* (migrated on start)."""
    from monolith import create_app

    return create_app({"STRANGLER_ENV": "testing", "DATABASE_URL": url,
                       "STRANGLER_DATA_DIR": str(tmp_path / "monolith-data")})


def close_monolith(app) -> None:  # noqa: ANN001
    """Stop the app's link expander and close its database connections."""
    from monolith import db

    app.extensions["link_expander"].shutdown(wait=True)
    with app.app_context():
        db.engine.dispose()


def populate(client, users: int = 3, messages: int = 4) -> dict:  # noqa: ANN001
    """Register *users* users and post *messages* messages each through the API; return what was made."""
    import base64

    made = {"users": [], "messages": [], "tokens": {}}
    for n in range(users):
        nickname = f"user{n}-{uuid.uuid4().hex[:6]}"
        user = client.post("/api/users", json={"nickname": nickname, "password": "pw"}).json
        auth = base64.b64encode(f"{nickname}:pw".encode()).decode()
        token = client.post("/api/tokens", headers={"Authorization": f"Basic {auth}"}).json["token"]
        made["users"].append(user)
        made["tokens"][user["id"]] = token
        for m in range(messages):
            # the first one has what CSV, COPY and escaping get wrong
            source = f"**{nickname}** says {m}" if m else 'a\ttab, "quotes",\n\\N back\\slash é ✓ \r'
            message = client.post("/api/messages", json={"source": source},
                                  headers={"Authorization": f"Bearer {token}"})
            assert message.status_code == 201, message.json
            made["messages"].append(message.json)
    return made


def rows(url: str, table: str) -> list[tuple]:
    """Every row of *table* at *url*, ordered by id."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
    finally:
        engine.dispose()


def execute(url: str, sql: str, **params: object) -> None:
    """Run one statement at *url* and commit."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(sql), params)
    finally:
        engine.dispose()
