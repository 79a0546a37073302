"""Training progress for people: one line per epoch on stderr, the same on a terminal and in a log.

An epoch takes seconds, so no per-batch bar. The line ends in the epoch's wall-clock time;
at the end the train stage prints its peak memory. Both go to the console only, never to a
tracked output (they differ run to run): ``lenet studies`` reads them back from a queued
run's log with :data:`EPOCH_LINE` and :data:`MEMORY_LINE`.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from pathlib import Path

# "epoch 3/10: train loss 0.2 acc 0.9 | [val loss 0.2 acc 0.9 | ]lr 0.05 | 5.1s": group 3 is the time.
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): .*\|\s*([0-9.]+)s\s*$", re.MULTILINE)
# "peak memory: 250 MiB (train 180 MiB, workers 70 MiB)": group 1 is the total.
MEMORY_LINE = re.compile(r"^peak memory: (\d+) MiB", re.MULTILINE)


class EpochProgress:
    """Prints each epoch's scores and time; the clock starts when it is made."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self._started = time.perf_counter()

    def epoch_done(self, row: dict) -> None:
        """One line: the training scores, the validation ones when there is a validation split."""
        now = time.perf_counter()
        validation = f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f} | " if "val_loss" in row else ""
        print(f"epoch {row['epoch']}/{self.epochs}: train loss {row['train_loss']:.4f} "
              f"acc {row['train_accuracy']:.4f} | {validation}lr {row['lr']:.4g} | {now - self._started:.1f}s",
              file=sys.stderr, flush=True)
        self._started = now


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
