"""The per-epoch console line: one per epoch on stderr, in the form lenet/exp_queue.py reads."""

from lenet.exp_queue import _EPOCH_LINE
from stages.common.progress import EpochProgress


def test_each_epoch_prints_one_line_that_exp_queue_reads(capsys):
    row = {"epoch": 2, "train_loss": 0.25, "train_accuracy": 0.9, "val_loss": 0.5, "val_accuracy": 0.8, "lr": 0.01}
    with EpochProgress(epochs=3) as progress:
        progress.epoch_done(row)
        progress.epoch_done({**row, "epoch": 3})
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 2
    assert lines[0].startswith("epoch 2/3: train loss 0.2500 acc 0.9000 | val loss 0.5000 acc 0.8000 | lr 0.01 |")
    matches = list(_EPOCH_LINE.finditer(err))
    assert [(m[1], m[2]) for m in matches] == [("2", "3"), ("3", "3")]  # and the time, at the end
