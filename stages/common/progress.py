"""Training progress for people: a live bar on a terminal, one line per epoch in logs.

A progress bar redrawn on every batch would flood a CI log with thousands of lines, so
when stderr is not a terminal only the per-epoch summary is printed. Wall-clock time and
memory go to the console only (never to a tracked output: they differ run to run);
``lenet studies`` reads them back from a queued run's log with :data:`EPOCH_LINE` and
:data:`MEMORY_LINE`.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


# "epoch 3/10: train loss 0.2 acc 0.9 | [val loss 0.2 acc 0.9 | ]lr 0.05 | 5.1s": group 3 is the time.
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): .*\|\s*([0-9.]+)s\s*$", re.MULTILINE)
# "peak memory: 250 MiB (train 180 MiB, workers 35 + 35 MiB)": group 1 is the total.
MEMORY_LINE = re.compile(r"^peak memory: (\d+) MiB", re.MULTILINE)


def _summary(row: dict, epochs: int, seconds: float) -> str:
    validation = f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f} | " if "val_loss" in row else ""
    return (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.4f} | {validation}lr {row['lr']:.4g} | {seconds:.1f}s")


def _high_water_mib(pid: int) -> float | None:
    """The peak resident set (VmHWM) of a live process, from Linux's /proc; None elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s*(\d+) kB", status, re.MULTILINE)
    return int(match[1]) / 1024 if match else None


def peak_memory_line(worker_pids: list[int]) -> str:
    """This process's peak resident memory and that of its live workers, as one console line.

    Each process's own high-water mark, added up: pages they share (the batch in shared
    memory) count once per process, so the total is an upper bound of the peak of the sum.
    Call it while the workers still run.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    workers = [mib for mib in map(_high_water_mib, worker_pids) if mib is not None]
    detail = f", workers {' + '.join(f'{mib:.0f}' for mib in workers)} MiB" if workers else ""
    return f"peak memory: {own + sum(workers):.0f} MiB (train {own:.0f} MiB{detail})"


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
