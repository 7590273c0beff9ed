"""``strangler scale`` and ``strangler upgrade``: how many instances each backend runs, and which release.

Both write an intent into etcd and watch the supervisor carry it out
(strangler.stack.scale, strangler.stack.upgrade).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from strangler.plan.cli import open_plan, plan_option
from strangler.stack.cli import run_dir_option
from strangler.stack.state import SUPERVISOR, read_state, running_records


def _running_stack(run_dir: Path) -> dict:
    """state.json of the stack running from ``run_dir`` with a supervisor; ClickException otherwise."""
    state = read_state(run_dir)
    live = running_records(run_dir)
    if not state or "etcd" not in live:
        raise click.ClickException(f"no stack is running from {run_dir}; start one with `strangler up`")
    if SUPERVISOR not in live:
        raise click.ClickException(f"the stack running from {run_dir} has no supervisor; "
                                   "`strangler down` and `strangler up` again")
    return state


@click.command()
@plan_option
@run_dir_option
@click.argument("counts", nargs=-1, required=True, metavar="BACKEND=N...")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=180, show_default=True,
              help="Seconds to wait for the new count.")
def scale(plan_path: Path, run_dir: Path | None, counts: tuple[str, ...], timeout: float) -> None:
    """Run N instances of each BACKEND: start new ones until healthy, drain the surplus.

    Draining takes an instance out of the registry, waits until Traefik no
    longer lists it, lets requests in flight finish, then stops it. A retired
    monolith is not scaled up: `strangler unretire` brings it back.
    """
    from router import table
    from router.etcd import Etcd, EtcdError
    from strangler.stack.retire import read_retired
    from strangler.stack.scale import (
        check_backend,
        parse_scale_spec,
        progress,
        routes_served,
        write_counts,
    )
    from strangler.stack.state import read_status
    from strangler.stack.upgrade import Intent, upgrade_key

    plan = open_plan(plan_path)
    wanted: dict[str, int] = {}
    for text in counts:
        try:
            spec = parse_scale_spec(text)
            check_backend(plan, spec.backend)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="BACKEND=N") from None
        wanted[spec.backend] = spec.instances
    where = (run_dir or plan.run_dir).resolve()
    state = _running_stack(where)
    etcd = Etcd(state["etcd"], timeout=5)
    try:
        routes, _ = table.load(etcd)
        if wanted.get(plan.monolith) and read_retired(etcd) is not None:
            raise click.ClickException(
                f"{plan.monolith} is retired: `strangler unretire` brings it back (its database caught up "
                f"and linked first); scaling it to {wanted[plan.monolith]} would not, so nothing was changed")
        for backend, n in wanted.items():
            served = routes_served(routes.values(), backend, plan.monolith)
            if n == 0 and served:
                raise click.ClickException(
                    f"{backend} still serves {len(served)} route(s) ({', '.join(served[:5])}"
                    f"{', ...' if len(served) > 5 else ''}); flip them away before scaling it to 0")
        write_counts(etcd, wanted, who=table.current_user())
    except EtcdError as exc:
        raise click.ClickException(f"etcd at {state['etcd']} did not answer: {exc}") from None
    def extra(backend: str) -> int:
        """A pending try runs one instance beside the count."""
        intent = Intent.from_json(etcd.get(upgrade_key(backend)))
        return 1 if intent is not None and intent.step == "try" else 0

    began = time.monotonic()
    shown: dict[str, str] = {}
    while True:
        processes = read_status(where)
        done = True
        for backend, n in wanted.items():
            seen = progress(processes, backend)
            line = f"{backend}: {seen.get('healthy', 0)}/{n + extra(backend)} healthy" + "".join(
                f", {count} {state_}" for state_, count in sorted(seen.items()) if state_ != "healthy")
            if shown.get(backend) != line:
                click.echo(line)
                shown[backend] = line
            if seen.get("crashlooping"):
                raise click.ClickException(f"{backend}: an instance is crashlooping; `strangler status` "
                                           "names its log")
            if seen != ({"healthy": n + extra(backend)} if n else {}):
                done = False
        if done:
            break
        if time.monotonic() - began > timeout:
            raise click.ClickException(f"not there within {timeout:g}s; `strangler status` shows where it is")
        time.sleep(0.2)
    summary = ", ".join(f"{backend}={n}" for backend, n in wanted.items())
    click.echo(f"scaled {summary} in {time.monotonic() - began:.1f}s")


def _env_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not key.replace("_", "a").isalnum():
            raise click.BadParameter(f"{pair!r}: write K=V, e.g. LOG_LEVEL=debug", param_hint="--env")
        env[key] = value
    return env


@click.command()
@plan_option
@run_dir_option
@click.argument("backend")
@click.argument("step", type=click.Choice(["try", "roll", "abort"]))
@click.option("--release", "release_name", metavar="NAME",
              help="Name the new release [default: a label from the command, env and code].")
@click.option("--env", "env_pairs", multiple=True, metavar="K=V",
              help="An environment variable of the new release (repeatable).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=300, show_default=True,
              help="Seconds to wait for the step to be carried out.")
def upgrade(plan_path: Path, run_dir: Path | None, backend: str, step: str, release_name: str | None,
            env_pairs: tuple[str, ...], timeout: float) -> None:
    """Ship a new release of BACKEND: try one instance, roll all of them one at a time, or abort.

    `try` starts one instance of the new release beside the old ones; `roll`
    replaces the old instances one at a time (new one healthy, then one old
    drained), and without a try first it is try + roll; `abort` drains the
    new release's instances. Every step is recorded in `strangler history`.
    """
    from router import table
    from router.etcd import Etcd, EtcdError
    from strangler.stack.release import check_name, release_label
    from strangler.stack.scale import check_backend
    from strangler.stack.state import read_status
    from strangler.stack.upgrade import Intent, UpgradeRefused, decide, stamp, upgrade_key

    plan = open_plan(plan_path)
    try:
        check_backend(plan, backend)
        if release_name is not None:
            check_name(release_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="BACKEND" if "backend" in str(exc) else "--release") \
            from None
    env = _env_pairs(env_pairs)
    where = (run_dir or plan.run_dir).resolve()
    state = _running_stack(where)
    etcd = Etcd(state["etcd"], timeout=5)
    running = [p["release"] for p in read_status(where).values()
               if p.get("backend") == backend and p.get("state") != "draining"]
    release = release_name or release_label(plan, backend, env, fresh=True)
    try:
        current = Intent.from_json(etcd.get(upgrade_key(backend)))
        intent = stamp(decide(step, current, release, env, running, bool(release_name or env)),
                       table.current_user())
        what = f"upgrade {backend} {step}: release {intent.release} (from {intent.previous})"
        change = table.note(etcd, who=table.current_user(), what=what,
                            puts={upgrade_key(backend): intent.to_json()})
    except UpgradeRefused as exc:
        raise click.ClickException(str(exc)) from None
    except EtcdError as exc:
        raise click.ClickException(f"etcd at {state['etcd']} did not answer: {exc}") from None
    click.echo(f"change {change.id}: {what}")
    began = time.monotonic()
    shown = ""
    while True:
        seen = [p for p in read_status(where).values() if p.get("backend") == backend]
        line = ", ".join(f"{p['name']} {p['release']} {p['state']}" for p in sorted(seen, key=lambda p: p["name"]))
        if line != shown:
            click.echo(line)
            shown = line
        stored = Intent.from_json(etcd.get(upgrade_key(backend)))
        new = [p for p in seen if p["release"] == intent.release]
        if any(p["state"] == "crashlooping" for p in new):
            raise click.ClickException(f"an instance of release {intent.release} is crashlooping; "
                                       f"`strangler upgrade {backend} abort` drains it")
        if step == "try" and any(p["state"] == "healthy" for p in new):
            break
        if step != "try" and stored is not None and stored.step in ("rolled", "aborted") \
                and stored.release == intent.release:
            break
        if time.monotonic() - began > timeout:
            raise click.ClickException(f"not done within {timeout:g}s; `strangler status` shows where it is")
        time.sleep(0.2)
    click.echo(f"{step} of {backend} release {intent.release} done in {time.monotonic() - began:.1f}s")
