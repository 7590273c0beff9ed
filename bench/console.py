"""The console's cost: its CPU per minute idle vs with the page open, and the page's first load.

Starts ``strangler up --detach`` of the repository's plan on free ports in a
temporary directory, then measures the console's processes (the gunicorn
master and its worker, from /proc) for ``--seconds`` with no page open (the
baseline), and again with the page open in headless Chromium (live by
server-sent events), while a light, bounded trickle of requests goes through Traefik so
the traffic columns have something to show. Then the first load: from
navigation to the page's first drawing, ``--loads`` times in fresh contexts.
Everything on loopback; the stack is stopped by ``strangler down`` at the end.

    .venv/bin/python bench/console.py [--seconds 30] [--loads 5]
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
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
STRANGLER = str(Path(sys.executable).parent / "strangler")
sys.path.insert(0, str(REPO / "tests" / "support"))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and its children (gunicorn's worker)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if root in (pid, ppid):
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def trickle(web: str, stop: threading.Event) -> int:
    """About 5 requests/s through Traefik until ``stop``: bounded, loopback only."""
    sent = 0
    with requests.Session() as session:
        while not stop.is_set() and sent < 10_000:
            for path in ("/api/users", "/"):
                try:
                    session.get(web + path, timeout=2)
                except requests.RequestException:
                    pass
                sent += 1
            stop.wait(0.4)
    return sent


def measure(pid: int, seconds: float) -> float:
    """The console's CPU as a share of one core over ``seconds``."""
    before, began = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="each CPU measurement (5-120)")
    parser.add_argument("--loads", type=int, default=5, help="first loads timed (1-20)")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 5.0), 120.0)
    loads = min(max(args.loads, 1), 20)
    from browser_pages import chromium

    from strangler.stack import procs

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", (REPO / "strangler.toml").read_text(), flags=re.M)
        text = re.sub(r'^run_dir = "[^"]*"', 'run_dir = "run"', text, flags=re.M)
        (base / "strangler.toml").write_text(text)
        run_dir = base / "run"
        started = subprocess.run([STRANGLER, "up", "--detach", "--plan", str(base / "strangler.toml")],
                                 capture_output=True, text=True, timeout=240)
        if started.returncode != 0:
            print(started.stdout + started.stderr, file=sys.stderr)
            subprocess.run([STRANGLER, "down", "--run-dir", str(run_dir)], capture_output=True, timeout=120)
            return 1
        stop = threading.Event()
        try:
            state = json.loads((run_dir / "state.json").read_text())
            pid = procs.read_pidfiles(run_dir)["console"].pid
            pump = threading.Thread(target=trickle, args=(state["web"], stop), daemon=True)
            pump.start()
            time.sleep(2)
            idle = measure(pid, seconds)
            with chromium() as browser:
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                page.goto(state["console"])
                page.wait_for_selector("body[data-ready='1']", timeout=30_000)
                watched = measure(pid, seconds)
                page.context.close()
                times = []
                for _ in range(loads):
                    context = browser.new_context(viewport={"width": 1280, "height": 800})
                    fresh = context.new_page()
                    began = time.monotonic()
                    fresh.goto(state["console"])
                    fresh.wait_for_selector("body[data-ready='1']", timeout=30_000)
                    times.append(time.monotonic() - began)
                    context.close()
        finally:
            stop.set()
            subprocess.run([STRANGLER, "down", "--run-dir", str(run_dir)], capture_output=True, timeout=120)
    print(f"console CPU, no page open:   {100 * idle:5.2f} % of one core = {60 * idle:5.2f} CPU s/minute")
    print(f"console CPU, page open:      {100 * watched:5.2f} % of one core = {60 * watched:5.2f} CPU s/minute"
          f"  ({watched / idle if idle else float('inf'):.1f}x the idle baseline; target < 2 %)")
    print(f"first load to first drawing: median {1000 * statistics.median(times):.0f} ms, "
          f"worst {1000 * max(times):.0f} ms over {loads} fresh contexts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
