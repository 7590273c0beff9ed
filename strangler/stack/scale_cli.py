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
            pending = Intent.from_json(etcd.get(upgrade_key(backend)))
            if pending is not None and pending.pending and pending.blue_green:
                raise click.ClickException(f"a blue/green of {backend} is pending; `strangler upgrade {backend} "
                                           "--finish` or `--rollback` it before scaling")
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
@click.argument("step", type=click.Choice(["try", "roll", "abort"]), required=False)
@click.option("--blue-green", "blue_green", is_flag=True,
              help="Start a full set of the new release as a second Traefik service, then switch every "
                   "route of BACKEND to it in one transaction.")
@click.option("--finish", is_flag=True, help="Keep the switched-to set: drain the old one.")
@click.option("--rollback", is_flag=True, help="Switch back to the old set in one transaction; drain the new.")
@click.option("--release", "release_name", metavar="NAME",
              help="Name the new release [default: a label from the command, env and code].")
@click.option("--env", "env_pairs", multiple=True, metavar="K=V",
              help="An environment variable of the new release (repeatable).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=300, show_default=True,
              help="Seconds to wait for the step to be carried out.")
def upgrade(plan_path: Path, run_dir: Path | None, backend: str, step: str | None, blue_green: bool,
            finish: bool, rollback: bool, release_name: str | None, env_pairs: tuple[str, ...],
            timeout: float) -> None:
    """Ship a new release of BACKEND: try one instance, roll all of them one at a time, or abort;
    or blue/green: a second full set, switched to at once, then finished or rolled back.

    `try` starts one instance of the new release beside the old ones; `roll`
    replaces the old instances one at a time (new one healthy, then one old
    drained), and without a try first it is try + roll; `abort` drains the
    new release's instances. `--blue-green` starts as many instances of the
    new release as BACKEND runs, under their own Traefik service, and once
    all are healthy switches every route of BACKEND to them in one etcd
    transaction; the old set keeps running until `--finish` drains it or
    `--rollback` switches back and drains the new set. Every step is
    recorded in `strangler history`.
    """
    from router import table
    from router.etcd import Etcd, EtcdError
    from router.keys import GREEN_SUFFIX, colour_service
    from strangler.stack.release import check_name, release_label
    from strangler.stack.retire import read_retired
    from strangler.stack.scale import check_backend
    from strangler.stack.state import read_status
    from strangler.stack.upgrade import (
        BLUE_GREEN,
        Intent,
        UpgradeRefused,
        decide,
        decide_blue_green,
        stamp,
        upgrade_key,
    )

    chosen = [name for name, on in ((step or "STEP", step), ("--blue-green", blue_green), ("--finish", finish),
                                    ("--rollback", rollback)) if on]
    if len(chosen) != 1:
        raise click.BadParameter("give one of try, roll, abort, --blue-green, --finish or --rollback"
                               + (f" (not {' and '.join(chosen)})" if chosen else ""), param_hint="STEP")
    bg_step = BLUE_GREEN if blue_green else "finish" if finish else "rollback" if rollback else None
    if (finish or rollback) and (release_name or env_pairs):
        raise click.BadParameter(f"--{bg_step} takes no --release or --env: it acts on the pending blue/green",
                                 param_hint="--release/--env")
    plan = open_plan(plan_path)
    try:
        check_backend(plan, backend)
        if release_name is not None:
            check_name(release_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="BACKEND" if "backend" in str(exc) else "--release") \
            from None
    if blue_green and f"{backend}{GREEN_SUFFIX}" in plan.backends:  # its Traefik service would be shared
        raise click.ClickException(
            f"a blue/green of {backend} starts its second set as the Traefik service {backend}{GREEN_SUFFIX}, "
            f"which is the plan's backend {backend}{GREEN_SUFFIX} too: rename that backend first; nothing was changed")
    env = _env_pairs(env_pairs)
    where = (run_dir or plan.run_dir).resolve()
    state = _running_stack(where)
    etcd = Etcd(state["etcd"], timeout=5)
    running = [p["release"] for p in read_status(where).values()
               if p.get("backend") == backend and p.get("state") != "draining"]
    release = release_name or release_label(plan, backend, env, fresh=True)
    try:
        if backend == plan.monolith and read_retired(etcd) is not None:  # as scale refuses it
            raise UpgradeRefused(f"{backend} is retired: `strangler unretire` brings it back (its database "
                                 "caught up and linked first); an upgrade would start it on a stale database, "
                                 "so nothing was changed")
        current = Intent.from_json(etcd.get(upgrade_key(backend)))
        if bg_step is None:
            intent = decide(step, current, release, env, running, bool(release_name or env))
            what = f"upgrade {backend} {step}: release {intent.release} (from {intent.previous})"
        else:
            live = table.load_options(etcd).service(backend)
            intent = decide_blue_green(bg_step, current, release, env, running, live,
                                       colour_service(backend, live))
            what = (f"upgrade {backend} --{bg_step}: release {intent.release} as {intent.service} "
                    f"(from {intent.previous} as {intent.base})")
        intent = stamp(intent, table.current_user())
        change = table.note(etcd, who=table.current_user(), what=what,
                            puts={upgrade_key(backend): intent.to_json()})
    except UpgradeRefused as exc:
        raise click.ClickException(str(exc)) from None
    except (EtcdError, table.ConcurrentChange) as exc:
        raise click.ClickException(f"etcd at {state['etcd']} did not answer: {exc}") from None
    click.echo(f"change {change.id}: {what}")
    label = step or f"--{bg_step}"
    ends = {"roll": ("rolled",), "abort": ("aborted",), BLUE_GREEN: ("switched", "finished", "rolled-back"),
            "finish": ("finished",), "rollback": ("rolled-back",)}
    began = time.monotonic()
    shown = ""
    while True:
        seen = [p for p in read_status(where).values() if p.get("backend") == backend]
        line = ", ".join(f"{p['name']} {p['release']}{_set(p, backend)} {p['state']}"
                         for p in sorted(seen, key=lambda p: p["name"]))
        if line != shown:
            click.echo(line)
            shown = line
        stored = Intent.from_json(etcd.get(upgrade_key(backend)))
        new = [p for p in seen if p["release"] == intent.release]
        if step != "abort" and bg_step != "rollback" and any(p["state"] == "crashlooping" for p in new):
            undo = f"upgrade {backend} abort" if bg_step is None else f"upgrade {backend} --rollback"
            raise click.ClickException(f"an instance of release {intent.release} is crashlooping; "
                                       f"`strangler {undo}` drains it")
        if step == "try" and any(p["state"] == "healthy" for p in new):
            break
        if step != "try" and stored is not None and stored.step in ends[step or bg_step] \
                and stored.release == intent.release:
            break
        if time.monotonic() - began > timeout:
            raise click.ClickException(f"not done within {timeout:g}s; `strangler status` shows where it is")
        time.sleep(0.2)
    took = time.monotonic() - began
    if bg_step == BLUE_GREEN:
        click.echo(f"switched every route of {backend} to {intent.service} (release {intent.release}) in "
                   f"{took:.1f}s; the old set keeps running: `strangler upgrade {backend} --finish` drains it, "
                   f"`--rollback` switches back")
    else:
        click.echo(f"{label} of {backend} release {intent.release} done in {took:.1f}s")


def _set(process: dict, backend: str) -> str:
    """`` (users-green)`` for an instance of a blue/green's second set; "" otherwise."""
    service = process.get("service") or backend
    return "" if service == backend else f" ({service})"
