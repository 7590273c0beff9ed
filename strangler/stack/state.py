"""The running stack's ``state.json``: what ``strangler up`` started and where (the one reader)."""

from __future__ import annotations

import json
from pathlib import Path

STATE_FILE = "state.json"


def read_state(run_dir: Path | str) -> dict | None:
    """The running stack's ``state.json`` (etcd, traefik_api, web, ... URLs), None if absent or unreadable."""
    try:
        data = json.loads((Path(run_dir) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
