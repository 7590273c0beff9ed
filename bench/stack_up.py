"""How long `strangler up --detach` takes until everything is healthy, and `strangler down`.

Runs the real CLI N times, each in a fresh temporary run dir with the
repository's plan on free ports (so nothing on the machine is disturbed),
and prints median / min / max. Everything it starts is stopped, also on
failure or Ctrl-C.

    .venv/bin/python bench/stack_up.py            # 3 runs
    .venv/bin/python bench/stack_up.py --runs 5 --warm
"""

from __future__ import annotations

import argparse
import json
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


def run(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run the CLI; return its wall time and result (raises on failure)."""
    began = time.monotonic()
    result = subprocess.run([STRANGLER, *args], capture_output=True, text=True, timeout=180)
    seconds = time.monotonic() - began
    if result.returncode != 0:
        raise SystemExit(f"strangler {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
    return seconds, result


def one_run(plan: Path, run_dir: Path) -> dict[str, float]:
    """Start and stop one stack; return the timings in seconds."""
    try:
        wall_up, _ = run("up", "--detach", "--plan", str(plan), "--run-dir", str(run_dir))
        stack_up = json.loads((run_dir / "state.json").read_text())["up_seconds"]
    finally:
        wall_down, _ = run("down", "--run-dir", str(run_dir))
    return {"up (command)": wall_up, "up (stack only)": stack_up, "down (command)": wall_down}


def main() -> None:
    """Parse the options, run the benchmark, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="how many up/down cycles (default 3)")
    parser.add_argument("--warm", action="store_true",
                        help="reuse one run dir (etcd data, SQLite schema) instead of a fresh one per run")
    args = parser.parse_args()
    timings: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as tmp:
        base = Path(tmp)
        plan = free_ports_plan(base)
        for i in range(args.runs):
            run_dir = base / ("run" if args.warm else f"run{i}")
            for name, seconds in one_run(plan, run_dir).items():
                timings.setdefault(name, []).append(seconds)
            print(f"run {i + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in timings.items()))
    print(f"\n{args.runs} runs ({'warm' if args.warm else 'cold'} run dir)   median    min    max")
    for name, values in timings.items():
        print(f"{name:<34}{statistics.median(values):7.2f}s{min(values):6.2f}s{max(values):6.2f}s")


if __name__ == "__main__":
    main()
