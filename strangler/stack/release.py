"""Release labels: which build of a backend an instance runs.

A label is a short hash of what makes two instances behave the same: the
plan backend's ``command`` and ``env`` (plus an upgrade's extra ``--env``)
and a fingerprint of the code in the plan's folder. Same inputs, same label;
change a line of code, the command or a variable and the label changes. An
operator may name a release instead (``--release NAME``). The label reaches
the instance as ``STRANGLER_RELEASE``: it registers it beside itself in etcd
and returns it from ``/healthz``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from strangler.plan import Plan

CODE_SUFFIXES = (".py", ".html", ".js", ".css", ".toml", ".ini", ".mako")
SKIP_DIRS = {"node_modules", "__pycache__", "tests", "bench", "docs", "build", "dist"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(name: str) -> str:
    """An explicit ``--release NAME``: letters, digits, ``_ . -``, at most 63; ValueError otherwise."""
    if not NAME.match(name):
        raise ValueError(f"release name {name!r} must be 1-63 letters, digits, '_', '.' or '-' "
                         "starting with a letter or digit")
    return name


@cache
def code_fingerprint(root: str, skip: str = "") -> str:
    """A hash of the code files under ``root`` (paths and contents), hidden folders, venvs and ``skip`` left out."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not (Path(folder, d) / "pyvenv.cfg").exists()
                         and os.path.join(folder, d) != skip)
        for name in sorted(files):
            if name.endswith(CODE_SUFFIXES):
                path = Path(folder, name)
                try:
                    content = path.read_bytes()
                except OSError:
                    continue
                digest.update(str(path.relative_to(root)).encode() + b"\0" + content + b"\0")
    return digest.hexdigest()


def release_label(plan: Plan, backend: str, extra_env: Mapping[str, str] | None = None,
                  *, fresh: bool = False) -> str:
    """The release label of ``backend`` as the plan (and ``extra_env``) would start it now.

    ``fresh`` reads the code again (an upgrade after an edit); otherwise the
    fingerprint this process computed first is reused.
    """
    root = str((plan.path.parent if plan.path else Path.cwd()).resolve())
    if fresh:
        code_fingerprint.cache_clear()
    spec = plan.backends[backend]
    inputs = {"command": spec.command, "env": dict(sorted({**spec.env, **(extra_env or {})}.items())),
              "code": code_fingerprint(root, str(plan.run_dir))}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:10]
