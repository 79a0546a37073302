"""A stage's outputs as one unit: built apart, swapped in together only when all are complete.

Every stage builds all of its outputs in a private staging area, ``.stage-tmp/<stage>-<pid>-
<random>/new/<output path>``, outside every DVC output (``.stage-tmp/`` is in ``.gitignore``
and ``.dvcignore``). Only when the stage's work is done, every declared output exists in
staging and :meth:`StageParams.check_unchanged` holds, the outputs are swapped in: each
existing output is renamed into ``old/``, its new version renamed into place. So an
interrupted or failed stage leaves the previous outputs whole and never a temporary file
inside an output directory.

The swap is a few renames with SIGINT/SIGTERM/SIGHUP held back until it ends, after a ``SWAP`` journal
is written. A SIGKILL inside that window (microseconds) can leave some outputs new and some
old; ``dvc status`` then reports them modified, and the next stage run rolls the journal
forward. A rename that fails (a read-only directory) rolls the outputs already swapped
back, so the old outputs stay whole. Leftovers of dead runs are removed by the next run.

Test hook: ``LENET_FAULT_AT=<point>:<SIGNAL>`` (e.g. ``built:SIGKILL``) makes the stage send
itself that signal at ``<point>``: ``begin`` (staging area made), ``built`` (outputs
complete in staging, nothing swapped), ``swap`` (first output swapped in). tests/test_faults.py
uses it to hit each point exactly; it does nothing when unset.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

STAGING_ROOT = Path(".stage-tmp")
JOURNAL = "SWAP"
FAULT_ENV = "LENET_FAULT_AT"
_HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def fault_point(name: str) -> None:
    """Send this process the signal named in ``$LENET_FAULT_AT`` if its point is ``name``."""
    point, _, signame = os.environ.get(FAULT_ENV, "").partition(":")
    if point == name:
        os.kill(os.getpid(), signal.Signals[signame or "SIGKILL"])


class StagedOutputs:
    """Where a stage builds each of its declared outputs (files or directories)."""

    def __init__(self, area: Path, outputs: Sequence[Path]):
        self.area = area
        self.outputs = [Path(o) for o in outputs]

    def path(self, output: str | os.PathLike) -> Path:
        """The staging path of ``output`` (one of the declared outputs, or a file inside one)."""
        output = Path(output)
        if not any(output == o or o in output.parents for o in self.outputs):
            raise ValueError(f"{output} is not one of this stage's outputs {self.outputs}")
        staged = self.area / "new" / output
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged

    def _check_complete(self) -> None:
        missing = [str(o) for o in self.outputs if not os.path.lexists(self.area / "new" / o)]
        if missing:
            raise RuntimeError(f"stage built no {', '.join(missing)}")  # a bug, not bad input


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _roll_forward(area: Path) -> None:
    """Finish the swap a killed run had committed to (its journal exists)."""
    outputs = json.loads((area / JOURNAL).read_text())
    for index, name in enumerate(outputs):
        new, target = area / "new" / name, Path(name)
        if os.path.lexists(new):
            if os.path.lexists(target):
                os.rename(target, _old(area, index))
            os.rename(new, target)


def _old(area: Path, index: int) -> Path:
    (area / "old").mkdir(exist_ok=True)
    return area / "old" / str(index)


def remove_stale() -> None:
    """Remove staging areas of runs that are no longer alive, finishing committed swaps."""
    if not STAGING_ROOT.is_dir():
        return
    for area in STAGING_ROOT.iterdir():
        parts = area.name.split("-")
        pid = int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            continue  # another stage (run by hand) is building its outputs right now
        if (area / JOURNAL).is_file():
            _roll_forward(area)
        shutil.rmtree(area, ignore_errors=True)


def _check_writable(outputs: Sequence[Path]) -> None:
    """Fail before touching anything if an output cannot be replaced (read-only directory)."""
    for output in outputs:
        parent = output.parent if str(output.parent) else Path(".")
        parent.mkdir(parents=True, exist_ok=True)
        for place in [parent] + ([output] if output.is_dir() and not output.is_symlink() else []):
            if not os.access(place, os.W_OK | os.X_OK):
                raise OSError(13, f"not writable, so {output} cannot be replaced", str(place))


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP back for the block, then deliver the first that came.

    Python-level handlers, not a signal mask: Python runs handlers in the main thread
    whichever thread the kernel picked, so only this defers them reliably.
    """
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in _HELD}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])


def _swap(area: Path, outputs: Sequence[Path]) -> None:
    """Rename every staged output into place, all or (on an error) none."""
    _check_writable(outputs)
    with _signals_held():
        with open(area / JOURNAL, "w") as handle:  # from here on, a next run rolls forward
            json.dump([str(o) for o in outputs], handle)
            handle.flush()
            os.fsync(handle.fileno())
        _rename_all(area, outputs)


def _rename_all(area: Path, outputs: Sequence[Path]) -> None:
    swapped: list[int] = []
    try:
        for index, output in enumerate(outputs):
            moved_old = False
            if os.path.lexists(output):
                os.rename(output, _old(area, index))
                moved_old = True
            try:
                os.rename(area / "new" / output, output)
            except OSError:
                if moved_old:
                    os.rename(_old(area, index), output)
                raise
            swapped.append(index)
            if index == 0:
                fault_point("swap")
    except BaseException:
        for index in reversed(swapped):  # put the previous outputs back, whole
            output = outputs[index]
            os.rename(output, area / "new" / output)
            if os.path.lexists(_old(area, index)):
                os.rename(_old(area, index), output)
        raise
    finally:
        (area / JOURNAL).unlink(missing_ok=True)


@contextlib.contextmanager
def staged_outputs(stage: str, outputs: Sequence[str | os.PathLike], params=None) -> Iterator[StagedOutputs]:
    """Build ``outputs`` in a staging area; swap them in when the ``with`` block succeeds.

    On an exception (or a signal) inside the block nothing is swapped and the staging area
    is removed.

    Parameters
    ----------
    stage : str
        The stage's name (names its staging area).
    outputs : sequence of str or path
        Every output the stage declares in ``dvc.yaml`` (files or directories).
    params : StageParams, optional
        The stage's :class:`~stages.common.params.StageParams`; checked unchanged in
        ``params.yaml`` just before the swap, so DVC never records params the outputs were
        not made with.

    Yields
    ------
    StagedOutputs
        Where to build each output.
    """
    outputs = [Path(o) for o in outputs]
    remove_stale()
    STAGING_ROOT.mkdir(exist_ok=True)
    area = Path(tempfile.mkdtemp(dir=STAGING_ROOT, prefix=f"{stage}-{os.getpid()}-"))
    try:
        staged = StagedOutputs(area, outputs)
        fault_point("begin")
        yield staged
        staged._check_complete()
        fault_point("built")
        if params is not None:
            params.check_unchanged()
        _swap(area, outputs)
    finally:
        if not (area / JOURNAL).exists():  # else a swap failed half-way: the next run finishes it
            shutil.rmtree(area, ignore_errors=True)
        with contextlib.suppress(OSError):
            STAGING_ROOT.rmdir()  # only if empty: other runs may be staging


def link_existing(source: Path, staged: Path) -> None:
    """Hard-link (or copy) the files of directory ``source`` into ``staged``, to be reused.

    Rewriting a file in staging replaces the link by a new file (atomic_write renames), so
    the output in place is never modified.
    """
    staged.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        return
    for path in source.iterdir():
        if path.is_file() and not path.name.startswith("."):
            try:
                os.link(path, staged / path.name)
            except OSError:
                shutil.copy2(path, staged / path.name)
