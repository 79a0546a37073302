"""The train stage's console lines: one per epoch on stderr and the peak memory, as lenet studies reads them."""

import os

from lenet.exp_queue import epoch_seconds, peak_memory_mib
from stages.common.progress import EPOCH_LINE, EpochProgress, peak_memory_line


def test_each_epoch_prints_one_line_that_exp_queue_reads(capsys):
    row = {"epoch": 2, "train_loss": 0.25, "train_accuracy": 0.9, "val_loss": 0.5, "val_accuracy": 0.8, "lr": 0.01}
    progress = EpochProgress(epochs=3)
    progress.epoch_done(row)
    progress.epoch_done({key: value for key, value in row.items() if not key.startswith("val_")} | {"epoch": 3})
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 2
    assert lines[0].startswith("epoch 2/3: train loss 0.2500 acc 0.9000 | val loss 0.5000 acc 0.8000 | lr 0.01 |")
    assert lines[1].startswith("epoch 3/3: train loss 0.2500 acc 0.9000 | lr 0.01 |")  # no validation split
    matches = list(EPOCH_LINE.finditer(err))
    assert [(m[1], m[2]) for m in matches] == [("2", "3"), ("3", "3")]  # and the time, at the end
    assert len(epoch_seconds(err)) == 2


def test_the_peak_memory_line_adds_the_workers_high_water_marks():
    line = peak_memory_line([os.getpid()])  # this process stands in for a worker: counted twice
    assert line.startswith("peak memory: ") and ", workers " in line
    total = peak_memory_mib(line)
    own = int(line.split("(train ")[1].split(" MiB")[0])
    assert total > 0 and abs(total - 2 * own) <= 1
    assert peak_memory_line([]).endswith(" MiB)") and "workers" not in peak_memory_line([])
