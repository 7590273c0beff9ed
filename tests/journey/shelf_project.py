"""Shelf, the second monolith, copied into a fresh folder as a user's project would hold it."""

import shutil
from pathlib import Path

SHELF = Path(__file__).resolve().parent / "shelf"


def make_project(base: Path) -> Path:
    """A project folder with the ``shelf`` package in it (and nothing of strangler's)."""
    project = base / "project"
    project.mkdir()
    shutil.copytree(SHELF, project / "shelf", ignore=shutil.ignore_patterns("__pycache__"))
    return project
