"""A scratch copy of the project for tests that run dvc: the one place that makes it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_project(root: Path) -> None:
    """Copy the project's files (tracked, or new and not ignored) into ``root``: no outputs, no .git."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / name)


# Scratch repos commit as a throwaway identity (a fresh machine may have none configured).
GIT = ("git", "-c", "user.name=t", "-c", "user.email=t@t")


def init_repo(root: Path) -> None:
    """``git init`` in ``root``."""
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, capture_output=True)


def commit_all(root: Path, message: str) -> None:
    """Stage everything in ``root`` (what .gitignore allows) and commit it as ``message``."""
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run([*GIT, "commit", "-qm", message], cwd=root, check=True, capture_output=True)
