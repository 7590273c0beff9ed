"""The run dir's shared files: ``state.json`` (what ``strangler up`` started and where),
``supervisor.json`` (what the supervisor sees) and the live pid records (the one reader of each).

A leaf of strangler/stack/: the modules that start, supervise, reconcile and
stop a stack all read these, so none of them needs to import another for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from strangler.stack import procs

STATE_FILE = "state.json"
SUPERVISOR = "supervisor"  # the supervisor's pid file's name
STATUS_FILE = "supervisor.json"


def read_state(run_dir: Path | str) -> dict | None:
    """The running stack's ``state.json`` (etcd, traefik_api, web, ... URLs), None if absent or unreadable."""
    try:
        data = json.loads((Path(run_dir) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_status(run_dir: Path | str) -> dict[str, Any]:
    """``supervisor.json``'s processes by name ({} without one)."""
    try:
        data = json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("processes", {}) if isinstance(data, dict) else {}


def running_records(run_dir: Path | str) -> dict[str, procs.PidRecord]:
    """The pid records in ``run_dir`` whose process still runs."""
    return {name: r for name, r in procs.read_pidfiles(run_dir).items() if r.running()}
