"""Write tests/durations.txt from the output of a ``pytest --durations=0`` run.

    .venv/bin/python -m pytest --durations=0 > /tmp/run.log; python scripts/test_durations.py /tmp/run.log

Each line of the file is the seconds a test module took (setup, call and
teardown summed) and the module (tests/support/spread.py): the parallel run
sends the longest modules first. Modules under a second are left out.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*([\d.]+)s\s+(?:setup|call|teardown)\s+(\S+)")
OUT = Path(__file__).resolve().parent.parent / "tests" / "durations.txt"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/test_durations.py LOG (the output of pytest --durations=0)",
              file=sys.stderr)
        return 2
    try:
        text = Path(argv[0]).read_text(errors="replace")
    except OSError as exc:
        print(f"cannot read {argv[0]}: {exc.strerror}", file=sys.stderr)
        return 2
    totals: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        found = LINE.match(line)
        if found:
            totals[found.group(2).split("::", 1)[0]] += float(found.group(1))
    if not totals:
        print(f"{argv[0]} has no durations; run pytest with --durations=0", file=sys.stderr)
        return 2
    kept = sorted(((s, m) for m, s in totals.items() if s >= 1.0), reverse=True)
    OUT.write_text("".join(f"{s:.1f} {m}\n" for s, m in kept))
    print(f"wrote {len(kept)} modules ({sum(s for s, _ in kept):.0f} s) to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
