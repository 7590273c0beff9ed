"""``strangler up``, ``down`` and ``status``: the local platform from the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from strangler import options
from strangler.plan import Plan, PlanError, load_plan
from strangler.plan.cli import open_plan, plan_option
from strangler.stack import procs
from strangler.stack.procs import StackError
from strangler.stack.state import SUPERVISOR, read_state, running_records
from strangler.stack.supervise import FAILED, READY, SPEC_ENV, Supervisor

if TYPE_CHECKING:  # the stack itself is imported where it is started: `up --detach` leaves that to its child
    from strangler.stack.lifecycle import Stack


def run_dir_option(command: Any) -> Any:
    """Add ``--run-dir`` (env STRANGLER_RUN_DIR; default: the plan's ``run_dir``, ``.strangler``)."""
    return click.option(
        "--run-dir", type=click.Path(file_okay=False, path_type=Path), envvar="STRANGLER_RUN_DIR",
        show_envvar=True, help="Where state, logs and data live [default: the plan's run_dir].",
    )(command)


def _port_option(name: str, key: str, what: str) -> Any:
    return click.option(
        f"--{name}-port", type=click.IntRange(0, 65535), envvar=f"STRANGLER_{name.upper().replace('-', '_')}_PORT",
        show_envvar=True, help=f"{what} [default: [stack] {key} in the plan; 0 = any free port].",
    )


def _resolve(plan_path: Path, run_dir: Path | None) -> tuple[Path, Plan | None]:
    """The run dir to use and the plan if it loads (down and status work without one)."""
    try:
        plan = load_plan(plan_path) if plan_path.is_file() else None
    except PlanError:
        plan = None
    return (run_dir or (plan.run_dir if plan else Path(".strangler"))).resolve(), plan


def _progress(line: str) -> None:
    # `strangler up | head` must not take the stack down with the closed pipe
    try:
        click.echo(line)
    except BrokenPipeError:
        pass


def _on_signal(signum: int, frame: Any) -> None:
    # Stop exactly once: a second Ctrl-C must not cut the clean stop short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


@click.command()
@plan_option
@run_dir_option
@click.option("--detach", "-d", is_flag=True, help="Return once healthy and leave the stack running.")
@_port_option("web", "web_port", "Traefik's web entrypoint: the app's URL")
@_port_option("dashboard", "dashboard_port", "Traefik's dashboard and API")
@_port_option("etcd", "etcd_port", "etcd's client port")
@_port_option("etcd-peer", "etcd_peer_port", "etcd's peer port")
@_port_option("redis", "redis_port", "Redis (the Socket.IO message queue)")
@_port_option("internal", "internal_port", "Traefik's internal entrypoint: services call each other through it")
@_port_option("console", "console_port", "The console: a web page to watch and steer the migration")
@click.option("--etcd-members", type=click.IntRange(1, 7), default=None, envvar="STRANGLER_UP_ETCD_MEMBERS",
              show_envvar=True, help="etcd members to start (3 survives losing one) [default: [stack] etcd_members].")
def up(plan_path: Path, run_dir: Path | None, detach: bool, etcd_members: int | None,
       **ports: int | None) -> None:
    """Start etcd, Redis, Traefik, the monolith and the plan's services on 127.0.0.1.

    Waits until each is healthy, then prints the app's URL. On a stack that
    already runs from the run dir it reconciles instead: starts the backends
    the plan adds, drains and stops the ones it drops (refused while they
    serve routes), applies the plan's routes keeping live flips. A supervisor
    restarts whatever ends unexpectedly (with back-off). In the foreground
    this command is the supervisor and Ctrl-C stops everything; with
    --detach a supervisor process stays behind and `strangler down` stops it all.
    """
    plan = open_plan(plan_path)
    where = (run_dir or plan.run_dir).resolve()
    if running_records(where):
        _reconcile(plan, where)
        return
    overrides = {name.removesuffix("_port"): value for name, value in ports.items()}
    overrides["etcd_members"] = etcd_members
    if detach:
        _up_detached(plan, run_dir, overrides)
        return
    from strangler.stack.lifecycle import Stack

    stack = Stack(plan, run_dir, overrides, echo=_progress)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        state = stack.up()
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; stopped everything it had started") from None
    _print_ready(state, plan)
    click.echo("press Ctrl-C to stop")
    _run_foreground(stack)


def _reconcile(plan: Plan, where: Path) -> None:
    """A stack already runs from ``where``: start what the plan adds, drain what it drops (strangler.stack.replan)."""
    from strangler.stack.replan import reconcile_running

    try:
        line = reconcile_running(plan, where, echo=_progress)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(line)


def _up_detached(plan: Plan, run_dir: Path | None, overrides: dict) -> None:
    """Start a supervisor process that brings the stack up; relay its progress until it is ready."""
    spec = {"plan": str(plan.path), "run_dir": str(run_dir) if run_dir else None, "ports": overrides}
    env = dict(os.environ, **{SPEC_ENV: json.dumps(spec)})
    child = subprocess.Popen([sys.executable, "-m", "strangler.stack.supervise"], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    assert child.stdout is not None
    try:
        for line in child.stdout:
            line = line.rstrip("\n")
            if line == READY:
                break
            if line.startswith(FAILED):
                child.wait(30)
                raise click.ClickException(line.removeprefix(FAILED))
            _progress(line)
        else:
            code = child.wait(30)
            raise click.ClickException(f"the supervisor ended with code {code} before the stack was up")
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)  # it stops what it had started
        child.wait(60)
        raise click.ClickException("interrupted; stopped everything it had started") from None
    finally:
        child.stdout.close()
    state = read_state(run_dir or plan.run_dir) or {}
    _print_ready(state, plan)
    click.echo(f"running in the background (supervisor pid {child.pid}); stop it with `strangler down`")


def _print_ready(state: dict, plan: Plan) -> None:
    started = [f"{n} x{len(b['instances'])}" for n, b in state["backends"].items()]
    idle = [n for n, b in plan.backends.items() if not b.start]
    rest = f"; not started: {', '.join(idle)}" if idle else ""
    click.echo(f"app:       {state['web']}/")
    click.echo(f"dashboard: {state['dashboard']}")
    if state.get("console"):
        click.echo(f"console:   {state['console']}")
    click.echo(f"stack up in {state['up_seconds']:.1f}s from {state['run_dir']}: "
               f"etcd, redis, traefik, {', '.join(started)}{rest}")


def _run_foreground(stack: Stack) -> None:
    """Supervise until Ctrl-C/SIGTERM (then stop everything) or `strangler down` (which stops it)."""
    supervisor = Supervisor(stack, echo=lambda line: click.echo(line, err=True))
    supervisor.serve_metrics()
    outcome = supervisor.run()
    if outcome == "hand-over":
        click.echo("the stack was stopped by `strangler down`")
        return
    if outcome == "ended":
        click.echo("every process of the stack has ended", err=True)
    else:
        click.echo("\nstopping ...")
    began = time.monotonic()
    results = stack.stop()
    procs.remove_pidfile(stack.run_dir, SUPERVISOR)
    _report(results, time.monotonic() - began)


def _report(results: list[tuple[str, int | None, str]], seconds: float) -> None:
    for name, pid, outcome in results:
        click.echo(f"stopped {name} (pid {pid}): {outcome}")
    click.echo(f"stack stopped in {seconds:.1f}s")


@click.command()
@plan_option
@run_dir_option
def down(plan_path: Path, run_dir: Path | None) -> None:
    """Stop every process `strangler up` started (by PID) and report how each ended."""
    where, _ = _resolve(plan_path, run_dir)
    began = time.monotonic()
    from strangler.stack.down import down as stop_stack

    results = stop_stack(where)
    if not results:
        click.echo(f"no stack is running from {where}")
        return
    if all(outcome == "gone" for _, _, outcome in results):
        click.echo(f"no stack was running from {where}; removed {len(results)} stale pid file(s)")
        return
    _report(results, time.monotonic() - began)
    stuck = [f"{name} (pid {pid})" for name, pid, outcome in results if outcome == "still running"]
    if stuck:
        raise click.ClickException(f"could not stop {', '.join(stuck)}; stop it by hand")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def _release(inst: dict, backend: str) -> str:
    """An instance's release, with its blue/green set when the backend has two (``v2 users-green live``)."""
    release = inst.get("release") or ""
    if (inst.get("service") or backend) == backend and inst.get("set", "live") == "live":
        return release
    return f"{release} {inst.get('service')} {inst.get('set')}".strip()


@click.command()
@plan_option
@run_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--watch", is_flag=True, help="Redraw it live until Ctrl-C.")
@click.option("--interval", type=options.WATCH_INTERVAL, default=2.0, show_default=True,
              help="Seconds between two redraws with --watch.")
def status(plan_path: Path, run_dir: Path | None, as_json: bool, watch: bool, interval: float) -> None:
    """Show the backends, their instances (address, version, age, health), where endpoints go and data sync lag."""
    where, plan = _resolve(plan_path, run_dir)
    if watch:
        if as_json:
            raise click.UsageError("give --json or --watch, not both")
        options.watch(lambda: _status_view(where, plan), interval)
        return
    from strangler.stack.lifecycle import status

    data = status(where, plan)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["running"]:
        click.echo(f"no stack is running from {where}; start one with `strangler up`")
        return
    _print_status(data)


def _status_view(where: Path, plan: Plan | None) -> Any:
    """What --watch redraws: the status tables, or one line while no stack runs."""
    from rich.console import Group

    from strangler.stack.lifecycle import status

    data = status(where, plan)
    if not data["running"]:
        return f"no stack is running from {where}; start one with `strangler up` (Ctrl-C to stop)"
    return Group(*_status_parts(data))


def _print_status(data: dict) -> None:
    from rich.console import Console

    # piped output would be cut to 80 columns; addresses must stay whole
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    for part in _status_parts(data):
        console.print(part)


def _status_parts(data: dict) -> list[Any]:
    """The status as Rich renderables: headline, backends, routes, data, write-through, problems."""
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    parts.append(Text.from_markup(f"stack from {data['run_dir']}, up {_age(time.time() - data['started'])}; "
                                  f"strategy [bold]{data['strategy']}[/bold]"))
    links = f"app {data['web']}/   dashboard {data['dashboard']}"
    if data.get("console"):
        links += f"   console {data['console']}"
    parts.append(Text(links))
    if data.get("retired"):
        retired = data["retired"]
        parts.append(Text.from_markup(f"[bold]{data.get('monolith', 'the monolith')} retired[/bold]: the plan is "
                                      f"done (by {retired.get('by', '?')}, "
                                      f"{_age(time.time() - retired.get('at', time.time()))} ago; "
                                      "`strangler unretire` brings it back)"))
    backends = Table("backend", "state", "instance", "pid", "release", "version", "age", "health",
                     "traefik", "lifecycle", "restarts", "last exit", title="backends")
    for row in data["backends"]:
        if not row["instances"]:
            backends.add_row(row["backend"], row["state"], *[""] * 10)
        for i, inst in enumerate(row["instances"]):
            health = ("healthy" if inst["healthy"] else "[red]unhealthy[/red]") if inst["registered"] \
                else "[red]not registered[/red]"
            life = inst.get("state") or ""
            backends.add_row(
                row["backend"] if i == 0 else "", row["state"] if i == 0 else "",
                inst["address"].removeprefix("http://"), str(inst.get("pid") or ""), _release(inst, row["backend"]),
                inst["version"], _age(inst["age"]) if inst["age"] is not None else "", health,
                inst["traefik"], f"[red]{life}[/red]" if life == "crashlooping" else life,
                str(inst.get("restarts", 0)), "" if inst.get("last_exit") is None else str(inst["last_exit"]),
            )
    parts.append(backends)
    if data.get("etcd_members"):
        members = Table("member", "pid", "client URL", "healthy", "leader", title="etcd")
        for m in data["etcd_members"]:
            members.add_row(m["name"], str(m.get("pid") or ""), m["url"],
                            "yes" if m["healthy"] else "[red]no[/red]", "leader" if m["leader"] else "")
        parts.append(members)
    routes = Table("backend", "state", "endpoints", title="routes")
    for row in data["routes"]:
        routes.add_row(row["backend"], row["state"], str(row["endpoints"]))
    parts.append(routes)
    if data["data"]:
        parts.append(_data_table(data["data"]))
    if data.get("write_through"):
        parts.append(_write_through_table(data["write_through"]))
    for problem in data["problems"]:
        parts.append(Text(problem, style="red"))
    return parts


def _write_through_table(rows: list[dict]) -> Any:
    """Per backend instance: rows written through to peers, failures and the last error."""
    from rich.table import Table

    grid = Table("backend", "inserted", "updated", "failed", "conflicts", "last error / note",
                 title="write-through (each commit, to the peer databases)")
    for row in rows:
        failed = f"[red]{row['failed']}[/red]" if row.get("failed") else "0"
        note = f"[red]{row['last_error']}[/red]" if row.get("last_error") else "; ".join(row.get("notes", []))
        grid.add_row(f"{row['backend']}.{row['instance']}", str(row.get("inserted", 0)),
                     str(row.get("updated", 0)), failed, str(row.get("conflicts", 0)), note)
    return grid


def _data_table(rows: list[dict]) -> Any:
    """The "data" table: per linked service and direction, the follower, lag and last pass."""
    from rich.table import Table

    grid = Table("service", "sync", "follower", "lag", "last pass", "note", title="data (linked with the monolith)")
    for row in rows:
        lag = "-" if row["lag"] is None else f"{row['lag']:.1f}s"
        age = "never" if row["last_pass_age"] is None else f"{_age(row['last_pass_age'])} ago"
        follower = row["follower"] if row["follower"] == "running" else f"[red]{row['follower']}[/red]"
        note = f"[red]{row['error']}[/red]" if row["error"] else ""
        if row.get("notes"):
            note += " " + "; ".join(row["notes"])
        if row.get("collisions"):
            note += (f" [red]{row['collisions']} id collision(s): "
                     f"strangler migrate verify {row['service']}[/red]")
        grid.add_row(row["service"], row["direction"], follower, lag, age, note)
    return grid


@click.command()
@plan_option
@run_dir_option
@click.argument("backend", required=False)
@click.option("-f", "--follow", "keep_following", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--since", metavar="DURATION", help="Only lines of the last DURATION: 30s, 5m, 2h, 1d.")
@click.option("-n", "--lines", "count", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="At most this many lines (the latest) before following.")
def logs(plan_path: Path, run_dir: Path | None, backend: str | None, keep_following: bool,
         since: str | None, count: int) -> None:
    """Print the stack's logs merged in time order, each line prefixed with its process.

    BACKEND narrows it to one backend's instances (users: users.0, users.1)
    or one process (etcd, traefik, console, sync-users; traefik-access for
    Traefik's access log).
    """
    from strangler.stack import logs as stack_logs

    where, _ = _resolve(plan_path, run_dir)
    try:
        cutoff = time.time() - stack_logs.parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    files = stack_logs.log_files(where, backend)
    if not files:
        known = ", ".join(sorted(stack_logs.log_files(where))) or "none"
        what = f"for {backend} " if backend else ""
        raise click.ClickException(f"no logs {what}in {where / 'logs'} (processes with logs: {known})")
    width = max(len(name) for name in files)
    try:
        for line in stack_logs.merge(files, cutoff)[-count:]:
            click.echo(f"{line.process:<{width}} | {line.text}")
        if keep_following:
            for line in stack_logs.follow(files):
                click.echo(f"{line.process:<{width}} | {line.text}")
    except (KeyboardInterrupt, BrokenPipeError):
        return
