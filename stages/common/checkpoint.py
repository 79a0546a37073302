"""Save and restore a training run after every epoch, so an interrupted run resumes exactly.

One ``.npz`` file (no pickle) holds the model, the optimizer state, the best weights so
far, and a JSON record of the rest: the RNG state, the history, early stopping, and a
fingerprint of everything that shapes the run (params, data, code). A checkpoint whose
fingerprint differs from the current run's is never resumed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nn.training import TrainState
from stages.common.errors import first_line
from stages.common.outputs import atomic_write

_MODEL, _OPTIM, _BEST, _RECORD = "model/", "optim/", "best/", "record"


def fingerprint(params: dict, files: list[Path]) -> str:
    """SHA-256 over the run's params and the bytes of ``files`` (data and source code)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=list).encode())
    for path in sorted(Path(p) for p in files):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, run_fingerprint: str, trainer, rng: np.random.Generator, state: TrainState) -> None:
    """Atomically write the whole run state (``trainer``'s model, optimizer and early stopping too) to ``path``."""
    record = {
        "fingerprint": run_fingerprint,
        "rng": rng.bit_generator.state,
        "epochs_done": state.epochs_done,
        "history": state.history,
        "stop_reason": state.stop_reason,
        "early_stopping": trainer.early_stopping.state_dict(),
    }
    arrays = {_RECORD: np.array(json.dumps(record))}
    arrays.update({_MODEL + k: v for k, v in trainer.model.state_dict().items()})
    arrays.update({_OPTIM + k: v for k, v in trainer.optimizer.state_dict().items()})
    if state.best_weights is not None:
        arrays.update({_BEST + k: v for k, v in state.best_weights.items()})
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def resume(path: Path, run_fingerprint: str, fresh: Callable[[], tuple]) -> tuple:
    """A new trainer, restored from the checkpoint at ``path`` when that belongs to this run.

    Parameters
    ----------
    path : Path
        The checkpoint (absent on a first run).
    run_fingerprint : str
        :func:`fingerprint` of this run: a checkpoint of other params, data or code is ignored.
    fresh : callable
        Makes ``(rng, trainer)`` as a run starts; called again if a load fails half-way.

    Returns
    -------
    (rng, trainer, state)
        ``state`` is the restored :class:`~nn.training.TrainState`, or None to start over.
    """
    rng, trainer = fresh()
    if not path.exists():
        return rng, trainer, None
    try:
        with np.load(path, allow_pickle=False) as archive:
            record = json.loads(str(archive[_RECORD]))
            if record["fingerprint"] != run_fingerprint:
                print(f"ignoring {path}: it belongs to other params, data or code; starting over", file=sys.stderr)
                return rng, trainer, None
            groups = {prefix: {key.removeprefix(prefix): archive[key] for key in archive.files
                               if key.startswith(prefix)} for prefix in (_MODEL, _OPTIM, _BEST)}
        trainer.model.load_state_dict(groups[_MODEL])
        trainer.optimizer.load_state_dict(groups[_OPTIM])
        rng.bit_generator.state = record["rng"]
        trainer.early_stopping.load_state_dict(record["early_stopping"])
        state = TrainState(epochs_done=record["epochs_done"], history=record["history"],
                           best_weights=groups[_BEST] or None, stop_reason=record["stop_reason"])
    except Exception as error:  # noqa: BLE001 - any damage: one line, and start over
        print(f"ignoring {path}: corrupt ({first_line(error)}); starting over", file=sys.stderr)
        trainer.model.close()  # the failed load may have filled some of its state
        rng, trainer = fresh()
        return rng, trainer, None
    print(f"resuming from {path} after epoch {state.epochs_done}", file=sys.stderr)
    return rng, trainer, state
