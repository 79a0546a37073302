"""Training progress for people: a live bar on a terminal, one line per epoch in logs.

A progress bar redrawn on every batch would flood a CI log with thousands of lines, so
when stderr is not a terminal only the per-epoch summary is printed.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def _summary(row: dict, epochs: int, seconds: float) -> str:
    return (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.4f} | val loss {row['val_loss']:.4f} "
            f"acc {row['val_accuracy']:.4f} | lr {row['lr']:.4g} | {seconds:.1f}s")


class EpochProgress:
    """Context manager fed by the trainer's ``on_batch`` and ``epoch_done`` calls."""

    def __init__(self, epochs: int, interactive: bool | None = None):
        self.epochs = epochs
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.epochs_done = 0
        self._epoch_started = time.perf_counter()  # wall-clock goes to the console only
        self._task = None
        self._progress = None
        if self.interactive:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.4f}"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    def __enter__(self):
        self._epoch_started = time.perf_counter()
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False

    def on_batch(self, index: int, batches: int, loss: float, accuracy: float) -> None:
        if self._progress is None:
            return
        if self._task is None or index == 0:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(
                "train", total=batches, epoch=self.epochs_done + 1, epochs=self.epochs, loss=loss, acc=accuracy)
        self._progress.update(self._task, completed=index + 1, loss=loss, acc=accuracy)

    def epoch_done(self, row: dict) -> None:
        self.epochs_done = row["epoch"]
        now = time.perf_counter()
        line = _summary(row, self.epochs, now - self._epoch_started)
        self._epoch_started = now
        if self._progress is not None:
            self._progress.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)
