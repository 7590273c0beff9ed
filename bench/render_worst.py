"""How long rendering the most hostile message takes, at the message size cap.

``monolith.render.render_html`` runs on every post and edit, inside the
request. Every shape below is a message of exactly ``SOURCE_MAX`` characters
(the cap ``POST``/``PUT /api/messages`` accept) built to make markdown or
bleach's sanitiser and linkifier backtrack: runs of brackets, nested and
unclosed tags, emphasis, links, images, backticks, entities, parentheses,
URL-like runs; ``--random`` seeded mixtures of those pieces look for a
worse combination. The summary line gives the worst time seen against the
budget (``--budget``, 100 ms); the exit status is 1 when it is exceeded.
Times are this thread's CPU time (waiting for a core on a busy machine is
not the renderer's cost); each candidate is screened once and the
``--top`` slowest are timed ``--repeat`` times, median and max printed.

    .venv/bin/python bench/render_worst.py
    .venv/bin/python bench/render_worst.py --repeat 11 --random 500 --size 8192
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monolith.models import SOURCE_MAX  # noqa: E402
from monolith.render import render_html  # noqa: E402

PIECES = [
    "[", "![", "](", "[a](", "[a]", "[](", "\\[", "*", "_", "**", "*a", "a*", "_a", "a_", "*a*",
    "`", "``", "`a", "``a`", "<", "<b>", "</b>", "<i><b>", "<a ", "<a>", "<!--", "<div>", "&",
    "&#", "&amp;", "(", "a(", "(a.co", "a.", "a-", "a.co.", "www.", "www.a(", "http://",
    "http://a.", "http://a.co/(", "http://localhost:", "https://[", "a@", "> ", "- ", "1. ",
    "\n", "|", "#", "  \n", "<http://", "[a]: ", "=\n", "~~~", "é", "\u202e",
]


def shapes(size: int) -> dict[str, str]:
    """Every piece repeated to exactly *size* characters, plus a few nested structures."""
    out = {repr(piece): (piece * (size // len(piece) + 1))[:size] for piece in PIECES}
    half = size // 2
    out["nested <b><i>...</i></b>"] = ("<b><i>" * size)[: half] + ("</i></b>" * size)[: size - half]
    out["[[[...]]]"] = "[" * half + "]" * (size - half)
    out["(((...)))"] = "(" * half + ")" * (size - half)
    out["***...***"] = "*" * half + "a" + "*" * (size - half - 1)
    out["links [a](b) ..."] = ("[a](http://b.co) " * size)[:size]
    out["> nested quotes"] = (">" * size)[:size]
    return out


def timed(source: str, repeat: int) -> tuple[float, float]:
    """(median, worst) CPU milliseconds of *repeat* renders of *source*.

    CPU time of this thread, not wall time: on a machine shared with other
    work, waiting for a core is not the renderer's cost. A full garbage
    collection runs before each render, so a collection of the whole
    process's heap (50-70 ms here, and due whatever the message) does not
    land inside one render by chance.
    """
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.thread_time()
        render_html(source)
        times.append((time.thread_time() - started) * 1000)
    return statistics.median(times), max(times)


def mixture(rng: random.Random, size: int) -> str:
    """A random run of a few pieces, repeated to *size* characters."""
    unit = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 4)))
    return (unit * (size // len(unit) + 1))[:size]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=SOURCE_MAX, help="message length (default: the cap)")
    parser.add_argument("--repeat", type=int, default=7, help="renders of each of the slowest shapes")
    parser.add_argument("--top", type=int, default=15, help="how many of the slowest shapes to time again")
    parser.add_argument("--random", type=int, default=200, help="random mixtures to try")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--budget", type=float, default=100.0, help="ms the worst render may take")
    args = parser.parse_args()

    render_html("warm up")
    candidates = dict(shapes(args.size))
    rng = random.Random(args.seed)
    for _ in range(args.random):
        source = mixture(rng, args.size)
        candidates["mix " + repr(source[:24])] = source
    # screen every candidate once, then time the slowest ones properly
    screened = sorted(candidates, key=lambda name: -timed(candidates[name], 1)[0])
    results = sorted(((*timed(candidates[name], args.repeat), name) for name in screened[: args.top]),
                     reverse=True)
    print(f"{'shape':40s} {'median ms':>10s} {'max ms':>8s}")
    for median, worst, name in results:
        print(f"{name[:40]:40s} {median:10.1f} {worst:8.1f}")
    median, worst, name = results[0]
    print(f"worst render of a {args.size}-character message: {median:.1f} ms CPU median of "
          f"{args.repeat} (max {worst:.1f}) for {name}; budget {args.budget:.0f} ms; "
          f"{len(candidates)} shapes screened")
    return 0 if median <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
