"""Training progress for people: one line per epoch on stderr, the same on a terminal and in a log.

An epoch takes seconds, so no per-batch bar. The line ends in the epoch's wall-clock time,
which goes to the console only (``lenet/exp_queue.py`` reads it), never to a tracked output.
"""

from __future__ import annotations

import sys
import time


class EpochProgress:
    """Prints each epoch's scores and time; entering the ``with`` block starts the clock."""

    on_batch = None  # no per-batch display (the trainer skips a callback of None)

    def __init__(self, epochs: int):
        self.epochs = epochs
        self._started = time.perf_counter()

    def __enter__(self) -> EpochProgress:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def epoch_done(self, row: dict) -> None:
        now = time.perf_counter()
        print(f"epoch {row['epoch']}/{self.epochs}: train loss {row['train_loss']:.4f} "
              f"acc {row['train_accuracy']:.4f} | val loss {row['val_loss']:.4f} "
              f"acc {row['val_accuracy']:.4f} | lr {row['lr']:.4g} | {now - self._started:.1f}s",
              file=sys.stderr, flush=True)
        self._started = now
