"""End to end: move users and messages out of the monolith one service at a time, then back.

ONE real stack (``strangler up --detach`` of a copy of the repository's
plan on free ports: it links users' and messages' data with the monolith's
and starts the write-through and the followers). Then, step by step:

1. everything on the monolith;
2. ``flip --service users``;  3. ``tokens``;  4. ``messages``;
5. ``socketio`` and ``ui``;  6. ``strangler rollback`` until the monolith
   serves everything again.

At every step between the first and the last two the whole Flack contract
passes through Traefik (in the others, all on the monolith and every
service flipped, the contract suite runs it on the same kind of stack, so
here a few checks of the whole path run), and at every step so does the
data story: a user and a message created in the step (register, log in
and post through whichever backend serves each endpoint now) and every one
created in an earlier step are readable by id and listed, *on both sides*
(the monolith's own instance and the owning service's, past Traefik); every
such user can log in through the current routing and post; and an edit made
now — to this step's rows and to the previous step's, made on the other
side — is seen on both sides at once. At the end ``strangler migrate verify``
is green for users and messages, and ``status`` shows the followers healthy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

# the contract is shared with the contract suite (not a package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
pytest.register_assert_rewrite("flack_contract")
import flack_contract as fc  # noqa: E402

from strangler.cli import cli  # noqa: E402
from strangler.stack import procs  # noqa: E402

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STRANGLER = str(Path(sys.executable).parent / "strangler")
# (step, services flipped by it); None: roll everything back
STEPS: list[tuple[str, list[str] | None]] = [
    ("monolith", []), ("users", ["users"]), ("tokens", ["tokens"]), ("messages", ["messages"]),
    ("socketio-and-ui", ["socketio", "ui"]), ("rolled-back", None),
]
# which backends hold each kind of row: the monolith's database and the owner's
SIDES = {"users": ("monolith", "users"), "messages": ("monolith", "messages")}
# Routing states the contract suite already runs every check in, on the same kind of stack
# (tests/contract/test_contract_through_traefik.py: all on the monolith, every service flipped,
# rolled back): here these steps run a few checks of the whole path; the steps between run all.
CONTRACT_ELSEWHERE = {"monolith", "socketio-and-ui", "rolled-back"}
FEW_CHECKS = ("register", "new_token", "new_message", "pushes", "post_message_over_socket")


@dataclass
class Made:
    """A user and their message, created in one step (fields as they must read now)."""

    step: str
    user_id: int
    nickname: str
    password: str
    message_id: int
    source: str


@dataclass
class Journey:
    """The running stack, the steps taken so far and every row made on the way."""

    plan: Path
    run_dir: Path
    state: dict
    taken: list[str] = field(default_factory=list)
    made: list[Made] = field(default_factory=list)

    @property
    def web(self) -> str:
        """Traefik: the app as users see it."""
        return self.state["web"]

    def instance(self, backend: str) -> str:
        """*backend*'s own instance, past Traefik."""
        return self.state["backends"][backend]["instances"][0]["url"]

    def strangler(self, *args: str) -> str:
        """A routing command against this stack, in-process; its output (exit 0 asserted)."""
        result = CliRunner().invoke(cli, [*args, "--plan", str(self.plan), "--etcd", self.state["etcd"],
                                          "--traefik-api", self.state["traefik_api"]])
        assert result.exit_code == 0, f"strangler {' '.join(args)}: {result.output}"
        return result.output

    def serving(self) -> dict[str, str]:
        """Endpoint -> the backend serving it now (``routes --json``)."""
        return {row["endpoint"]: row["backend"] for row in json.loads(self.strangler("routes", "--json"))}


def start(base: Path) -> Journey:
    """``strangler up --detach`` of the repository's plan on free ports, run dir ``base/run``."""
    text = (REPO / "strangler.toml").read_text()
    text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", text, flags=re.M)
    text = re.sub(r'^run_dir = "[^"]*"', 'run_dir = "run"', text, flags=re.M)
    plan = base / "strangler.toml"
    plan.write_text(text)
    run_dir = base / "run"
    # every backend inherits the opt-in: the linked test page is on 127.0.0.1
    env = {**os.environ, "LINK_EXPANSION_ALLOW_PRIVATE": "true"}
    result = subprocess.run([STRANGLER, "up", "--detach", "--plan", str(plan)],
                            capture_output=True, text=True, timeout=180, env=env)
    if result.returncode != 0:
        stop(run_dir)
        pytest.fail(f"strangler up failed: {result.stdout}{result.stderr}")
    assert re.search(r"^data ready .* users, messages linked$", result.stdout, re.M), result.stdout
    return Journey(plan, run_dir, json.loads((run_dir / "state.json").read_text()))


def stop(run_dir: Path) -> None:
    """``strangler down``, then stop by PID whatever it left running."""
    subprocess.run([STRANGLER, "down", "--run-dir", str(run_dir)], capture_output=True, timeout=120)
    for record in procs.read_pidfiles(run_dir).values():
        record.stop()


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journey]:
    """The module's one stack, taken down (by PID) afterwards."""
    running = start(tmp_path_factory.mktemp("migration"))
    try:
        yield running
    finally:
        stop(running.run_dir)


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """A local page for link expansion to fetch."""
    with fc.linked_page() as url:
        yield url


# ---- the steps ---------------------------------------------------------------------------


def take(journey: Journey, index: int) -> None:
    """Take every step up to *index* not taken yet (so one step also runs alone, with -k)."""
    for name, services in STEPS[: index + 1]:
        if name in journey.taken:
            continue
        if services is None:
            for _ in range(len(STEPS) + 2):  # one rollback per flip; a few spare
                if not _flipped(journey):
                    break
                journey.strangler("rollback")
        for service in services or []:
            journey.strangler("flip", "--service", service, "--to", service)
        journey.taken.append(name)


def _flipped(journey: Journey) -> list[str]:
    """Endpoints a service serves besides the ones it ``serves`` itself (the /internal/ ones)."""
    return [ep for ep, backend in journey.serving().items()
            if backend != "monolith" and not ep.split()[1].startswith("/internal/")]


def expected(index: int) -> set[str]:
    """The services that must serve their endpoints after step *index*."""
    if STEPS[index][1] is None:
        return set()
    return {service for _, services in STEPS[: index + 1] for service in services or []}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("index", range(len(STEPS)), ids=[name for name, _ in STEPS])
def test_step_keeps_the_contract_and_every_row(journey: Journey, page_url: str, index: int) -> None:
    take(journey, index)
    serving = journey.serving()
    assert {serving[ep] for ep in _flipped(journey)} == expected(index), serving
    previous = journey.made[-1] if journey.made else None
    journey.made.append(make(journey.web, STEPS[index][0]))
    if previous is not None:  # rows made in another routing state, edited through this one
        edit(journey.web, previous)
    if STEPS[index][0] in CONTRACT_ELSEWHERE:
        for check in FEW_CHECKS:
            fc.run_check(check, journey.web, page_url)
    else:
        fc.run_contract(journey.web, page_url)
    for made in journey.made:
        assert_everywhere(journey, made)
        token = fc.Flack(journey.web).login(made.nickname, made.password)  # wherever tokens are served
        fc.Flack(journey.web).post(token, f"still here in {STEPS[index][0]}")


def test_verify_is_green_and_status_shows_the_followers(journey: Journey) -> None:
    take(journey, len(STEPS) - 1)
    assert len(journey.made) >= len(STEPS)
    for service in ("users", "messages"):
        deadline = time.monotonic() + 10  # a follower pass may still be carrying presence changes
        while True:
            result = subprocess.run([STRANGLER, "migrate", "verify", service, "--plan", str(journey.plan)],
                                    capture_output=True, text=True, timeout=60)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{service}: ok" in result.stdout
    status = subprocess.run([STRANGLER, "status", "--json", "--plan", str(journey.plan)],
                            capture_output=True, text=True, timeout=60)
    rows = json.loads(status.stdout)["data"]
    assert len(rows) == 4
    for row in rows:
        assert row["follower"] == "running" and row["error"] is None and row["last_pass_age"] < 5, row


# ---- what every step does with rows ------------------------------------------------------


def make(web: str, step: str) -> Made:
    """Register, log in, post and edit through the current routing; the rows as they must read."""
    app = fc.Flack(web)
    password = "pw-" + uuid.uuid4().hex[:6]
    user, token = app.user(password)
    message = app.post(token, f"made in {step} {uuid.uuid4().hex[:6]}")
    assert message["user_id"] == user["id"]
    made = Made(step, user["id"], user["nickname"], password, message["id"], message["source"])
    edit(web, made, token)
    return made


def edit(web: str, made: Made, token: str | None = None) -> None:
    """Rename *made*'s user and rewrite its message through the current routing (204s)."""
    app = fc.Flack(web)
    token = token or app.login(made.nickname, made.password)
    nickname, source = fc.unique("e"), f"edited {uuid.uuid4().hex[:6]}"
    renamed = app.request("PUT", f"/api/users/{made.user_id}", json={"nickname": nickname},
                          headers=fc.bearer(token))
    assert renamed.status_code == 204, fc.show(renamed)
    rewritten = app.request("PUT", f"/api/messages/{made.message_id}", json={"source": source},
                            headers=fc.bearer(token))
    assert rewritten.status_code == 204, fc.show(rewritten)
    made.nickname, made.source = nickname, source


def assert_everywhere(journey: Journey, made: Made) -> None:
    """*made* reads the same by id and in the listings, on both sides and through Traefik — now."""
    for base in [journey.instance(side) for side in SIDES["users"]] + [journey.web]:
        user = fc.Flack(base).shown("users", made.user_id)
        assert user["nickname"] == made.nickname, (base, made, user)
        listed = _get(base, "/api/users")["users"]
        assert made.user_id in {u["id"] for u in listed}, (base, made)
    for base in [journey.instance(side) for side in SIDES["messages"]] + [journey.web]:
        message = fc.Flack(base).shown("messages", made.message_id)
        assert (message["source"], message["user_id"]) == (made.source, made.user_id), (base, made, message)
        listed = _get(base, f"/api/messages?user_id={made.user_id}")["messages"]
        assert made.message_id in {m["id"] for m in listed}, (base, made)


def _get(base: str, path: str) -> dict:
    answer = requests.get(base + path, timeout=fc.TIMEOUT, headers={"Accept": "application/json"})
    assert answer.status_code == 200, fc.show(answer)
    return answer.json()
