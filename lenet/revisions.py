"""What a git revision (or the workspace) holds: its files, and DVC's params and metrics diffs.

The review report compares two revisions; this module is its only contact with git and DVC.
A name is resolved to its commit as ``dvc metrics diff`` resolves it (:func:`dvc.scm.resolve_rev`:
branches, tags, commits and experiment names), then git and DVC are run as subprocesses on
that commit, the diffs with ``--json`` output: the stable, documented interface of
``dvc params diff`` and ``dvc metrics diff``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dvc.repo import Repo
from dvc.scm import RevError, resolve_rev

from stages.common.errors import LenetError

WORKSPACE = None  # a revision of None means the files on disk, as DVC's own diffs read it


def label(rev: str | None) -> str:
    """How a revision is named in the report: its name, or ``workspace``."""
    return "workspace" if rev is WORKSPACE else rev


def resolve(rev: str, option: str) -> str:
    """The commit ``rev`` names: a branch, tag, commit or DVC experiment (``dvc exp run -n NAME``).

    Raises
    ------
    LenetError
        One line when nothing has that name; in a shallow clone (CI's default checkout) it
        says so, the likely cause.
    """
    try:
        with Repo(".") as repo:
            return resolve_rev(repo.scm, rev)
    except RevError as error:
        reason = str(error) if "ambiguous" in str(error) else "not a branch, tag, commit or experiment of this repository"
        shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"],
                                 capture_output=True, text=True).stdout.strip() == "true"
        hint = " (this clone is shallow: in CI, check out with fetch-depth: 0)" if shallow else ""
        raise LenetError(f"{option} {rev}: {reason}{hint}") from None


def read_file(rev: str | None, path: Path) -> str | None:
    """The text of ``path`` (relative to the repository root) at ``rev``; None if it is not there."""
    if rev is WORKSPACE:
        return path.read_text() if path.exists() else None
    result = subprocess.run(["git", "show", f"{rev}:{path.as_posix()}"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def dvc_diff(kind: str, base: str, rev: str | None) -> dict:
    """``dvc {kind} diff base [rev] --all --json``: {file: {key: {"old", "new", "diff"?}}}.

    Keys of nested metrics come flattened (``per_class.3.recall``). A revision without the
    file gives ``None`` for its side; DVC then exits 0 and warns on stderr, which is dropped
    because the report says it in its own words.
    """
    command = [sys.executable, "-m", "dvc", kind, "diff", base, *([] if rev is WORKSPACE else [rev]),
               "--all", "--json"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise LenetError(f"dvc {kind} diff {base} {label(rev)} failed: {message}")
    try:
        return json.loads(result.stdout or "{}")
    except json.JSONDecodeError as error:
        raise LenetError(f"dvc {kind} diff {base} {label(rev)}: output is not JSON ({error})") from None
