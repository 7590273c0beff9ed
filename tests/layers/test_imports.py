"""The layers point one way: apps -> router / datalink; the toolkit may import everything.

``monolith/`` and ``extracted/`` import only the apps, ``router/`` and
``datalink/``; ``router/`` and ``datalink/`` import only themselves (and
nothing of each other). Checked twice: every import statement in the code
(read, not run), and for real, by building every app in a fresh interpreter
and looking at what got loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = {"monolith", "extracted", "router", "datalink", "strangler", "migrations"}
ALLOWED = {
    "monolith": {"monolith", "router", "datalink", "migrations"},
    "extracted": {"extracted", "monolith", "router", "datalink", "migrations"},
    "router": {"router"},
    "datalink": {"datalink"},
    "migrations": {"migrations", "monolith", "extracted", "datalink", "router"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages of ours that *path* imports (anywhere in the file, lazy ones too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in OURS)
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_is_below_it(layer: str) -> None:
    wrong = {}
    for path in sorted((REPO / layer).rglob("*.py")):
        bad = imported_packages(path) - ALLOWED[layer]
        if bad:
            wrong[str(path.relative_to(REPO))] = sorted(bad)
    assert wrong == {}, f"{layer}/ may import only {sorted(ALLOWED[layer])}"


def test_building_every_app_loads_nothing_of_the_toolkit(tmp_path) -> None:
    script = f"""
import json, sys
config = {{"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": {str(tmp_path)!r},
          "JWT_SECRET_KEY": "k" * 64, "AUTO_MIGRATE": False}}
from monolith import create_app
create_app({{**config, "DATABASE_URL": "sqlite:///{tmp_path}/m.sqlite"}})
for name in ("users", "tokens", "messages", "socketio", "ui"):
    module = __import__(f"extracted.{{name}}", fromlist=["create_app"])
    module.create_app({{**config, "DATABASE_URL": f"sqlite:///{tmp_path}/{{name}}.sqlite"}})
import router.registry, router.lbclient, datalink.writethrough
print(json.dumps(sorted(m for m in sys.modules if m == "strangler" or m.startswith("strangler."))))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []
