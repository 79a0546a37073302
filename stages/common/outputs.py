"""Write outputs whole or not at all: no half-written file ever sits where DVC or a user looks.

A stage builds its declared outputs in ``.stage-tmp/<stage>/`` (ignored by git and DVC) and
renames them into place together once all are complete (:func:`staged_outputs`); what this
guarantees under ``dvc repro`` and when run by hand is written in docs/faults.md. Files
outside DVC's outputs (the checkpoint, ``lenet``'s files) are written with :func:`atomic_write`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from stages.common.paths import STAGING
from stages.common.params import Section, check_unchanged


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one rename.

    On any exception (or signal turned into one) the temporary file is removed and ``path`` is
    untouched. The file gets the permissions a plain ``open()`` gives (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            umask = os.umask(0)  # reading the umask means setting it: set it straight back
            os.umask(umask)
            os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes it 0600
            yield handle
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_json(path: Path, obj) -> None:
    """``obj`` as indented, key-sorted JSON (stable diffs in review)."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class Staging:
    """Where a stage builds each of its declared outputs before they go in place."""

    def __init__(self, area: Path):
        self.area = area

    def path(self, output: str | os.PathLike) -> Path:
        """The staging path of ``output``: one of the declared outputs, or a file inside one."""
        staged = self.area / "new" / output
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged


def put_in_place(area: Path, outputs: Sequence[Path]) -> None:
    """Rename every built output over the old one; each is wholly old or wholly new after.

    Nothing is renamed if some output cannot be replaced (a read-only folder). A file is
    replaced in one rename. A folder cannot be, so the old one is moved into ``area`` first
    (and removed with it), and moved back if the new one cannot follow.
    """
    for output in outputs:
        output.parent.mkdir(parents=True, exist_ok=True)
        for place in [output.parent] + ([output] if output.is_dir() and not output.is_symlink() else []):
            if not os.access(place, os.W_OK | os.X_OK):
                raise OSError(13, f"not writable, so {output} cannot be replaced", str(place))
    for index, output in enumerate(outputs):
        new, old = area / "new" / output, area / f"old-{index}"
        if output.is_dir() and not output.is_symlink():
            os.rename(output, old)
            try:
                os.rename(new, output)
            except OSError:
                os.rename(old, output)
                raise
        else:
            os.replace(new, output)


@contextlib.contextmanager
def staged_outputs(stage: str, outputs: Sequence[str | os.PathLike], params: Section | None = None) -> Iterator[Staging]:
    """Build ``outputs`` in ``.stage-tmp/<stage>/``; put them in place once all are complete.

    Parameters
    ----------
    stage : str
        The stage's name; one run of a stage at a time (DVC's lock sees to it), so a folder
        left by a killed run is simply removed by the next.
    outputs : sequence of path
        Every output the stage declares in ``dvc.yaml`` (files or folders).
    params : Section, optional
        What :func:`~stages.common.params.load_params` gave the stage: checked unchanged in
        params.yaml before anything goes in place.

    Yields
    ------
    Staging
        ``staging.path(output)`` is where to build each output.
    """
    outputs = [Path(o) for o in outputs]
    area = STAGING / stage
    shutil.rmtree(area, ignore_errors=True)
    area.mkdir(parents=True)
    try:
        yield Staging(area)
        if params is not None:
            check_unchanged(params)
        put_in_place(area, outputs)
    finally:
        shutil.rmtree(area, ignore_errors=True)
        with contextlib.suppress(OSError):
            STAGING.rmdir()  # only if empty
