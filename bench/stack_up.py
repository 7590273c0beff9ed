"""How long `strangler up --detach` takes until everything is healthy, and `strangler down`.

Runs the real CLI N times, each in a fresh temporary run dir with the
repository's plan on free ports (so nothing on the machine is disturbed),
and prints median / min / max. With ``--compare REF`` it also runs the code
of git revision REF (extracted to a temporary directory and put first on
PYTHONPATH, for the CLI and every process it starts), alternating with the
working tree's run by run, and prints the ratio of the medians: a
before/after from the same run on the same (shared, noisy) machine.
Everything it starts is stopped, also on failure or Ctrl-C.

    .venv/bin/python bench/stack_up.py            # 3 runs
    .venv/bin/python bench/stack_up.py --runs 5 --warm
    .venv/bin/python bench/stack_up.py --runs 5 --compare main
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRANGLER = str(Path(sys.executable).parent / "strangler")
sys.path.insert(0, str(REPO))


def free_ports_plan(directory: Path) -> Path:
    """A copy of the repository's plan with every [stack] port 0 (free ports)."""
    text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", (REPO / "strangler.toml").read_text(), flags=re.M)
    path = directory / "strangler.toml"
    path.write_text(text)
    return path


def run(*args: str, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run the CLI; return its wall time and result (raises on failure)."""
    began = time.monotonic()
    # not from the checkout: python puts the working directory first on sys.path, ahead of PYTHONPATH's copy
    result = subprocess.run([STRANGLER, *args], capture_output=True, text=True, timeout=180, env=env,
                            cwd=tempfile.gettempdir())
    seconds = time.monotonic() - began
    if result.returncode != 0:
        raise SystemExit(f"strangler {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
    return seconds, result


def one_run(plan: Path, run_dir: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Start and stop one stack; return the timings in seconds."""
    try:
        wall_up, _ = run("up", "--detach", "--plan", str(plan), "--run-dir", str(run_dir), env=env)
        stack_up = json.loads((run_dir / "state.json").read_text())["up_seconds"]
    finally:
        wall_down, _ = run("down", "--run-dir", str(run_dir), env=env)
    return {"up (command)": wall_up, "up (stack only)": stack_up, "down (command)": wall_down}


def extract(ref: str, directory: Path) -> dict[str, str]:
    """The tree of git revision ``ref`` in ``directory``; the environment that runs it instead of ours."""
    directory.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    # the editable install's finder comes after sys.path: PYTHONPATH's copy wins, in every child too
    return dict(os.environ, PYTHONPATH=str(directory))


def table(title: str, timings: dict[str, list[float]]) -> None:
    """Median / min / max per measure."""
    print(f"\n{title:<34}   median    min    max")
    for name, values in timings.items():
        print(f"{name:<34}{statistics.median(values):7.2f}s{min(values):6.2f}s{max(values):6.2f}s")


def load() -> str:
    """The 1-minute load average, for the report."""
    return f"{os.getloadavg()[0]:.1f}"


def main() -> None:
    """Parse the options, run the benchmark, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="how many up/down cycles (default 3)")
    parser.add_argument("--warm", action="store_true",
                        help="reuse one run dir (etcd data, SQLite schema) instead of a fresh one per run")
    parser.add_argument("--compare", metavar="REF",
                        help="also run git revision REF, alternating run by run, and print after/before ratios")
    args = parser.parse_args()
    print(f"load average {load()} on {os.cpu_count()} cores")
    variants: dict[str, dict[str, str] | None] = {"this tree": None}
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as tmp:
        base = Path(tmp)
        plan = free_ports_plan(base)
        if args.compare:
            variants = {args.compare: extract(args.compare, base / "before"), "this tree": None}
        for i in range(args.runs):
            for label, env in variants.items():
                run_dir = base / label.replace("/", "_") / ("run" if args.warm else f"run{i}")
                timings = results.setdefault(label, {})
                for name, seconds in one_run(plan, run_dir, env).items():
                    timings.setdefault(name, []).append(seconds)
                print(f"run {i + 1}/{args.runs} {label}: "
                      + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in timings.items()) + f" (load {load()})")
    kind = "warm" if args.warm else "cold"
    for label, timings in results.items():
        table(f"{label}: {args.runs} runs ({kind} run dir)", timings)
    if args.compare:
        before, after = results[args.compare], results["this tree"]
        print(f"\nthis tree / {args.compare} (medians)")
        for name in after:
            ratio = statistics.median(after[name]) / statistics.median(before[name])
            print(f"{name:<34}{ratio:7.2f}x")
    print(f"load average {load()} at the end")


if __name__ == "__main__":
    main()
