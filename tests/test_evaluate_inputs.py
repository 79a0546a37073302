"""Issue 17, item 7: ``python -m stages.evaluate`` with a corrupt or empty metrics/train.json.

The model card quotes figures of training from metrics/train.json: a damaged file is one
line naming it, and nothing is written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import nn
from stages.common.model_files import write_model
from tests.test_faults_inputs import RUN_A, _small_split, _stage

TRAINING = {"best_epoch": 1, "epochs_run": 1, "train_loss": 2.3, "train_accuracy": 0.1, "val_loss": 2.3,
            "val_accuracy": 0.1}
RUN = {"stop_reason": "completed 1 epochs", "parameters": 1}


@pytest.fixture
def evaluable(tmp_path):
    """A project holding a model and splits of one normalize run: all evaluate needs but train.json."""
    config = {"channels": [2, 4], "hidden": [8, 8]}
    write_model(tmp_path / "models", nn.lenet5(**config, rng=np.random.default_rng(0)), config,
                {"mean": 0.13, "std": 0.31, "normalize_run": RUN_A})
    for split in ("train", "val", "test"):
        _small_split(tmp_path / f"data/prepared/{split}.parquet", RUN_A)
    (tmp_path / "metrics").mkdir()
    return tmp_path


@pytest.mark.parametrize("name, content, problem", [
    ("train.json", "", "metrics/train.json: not valid JSON (Expecting value: line 1 column 1 (char 0)); "
                       "rerun the train stage"),
    ("train.json", '{"best_epoch": 1, ', "metrics/train.json: not valid JSON (Expecting property name"),
    ("train.json", "[1, 2]", "metrics/train.json: expected the train stage's best_epoch, epochs_run, val_accuracy, "
                             "val_loss; rerun the train stage"),
    ("train.json", json.dumps({k: v for k, v in TRAINING.items() if k != "epochs_run"}),
     "metrics/train.json: expected the train stage's"),
    ("train_run.json", "\xff", "metrics/train_run.json: not valid JSON"),
    ("train_run.json", json.dumps({"parameters": 1}), "metrics/train_run.json: expected the train stage's parameters, "
                                                       "stop_reason"),
])
def test_damaged_training_figures_are_one_line_and_nothing_is_written(evaluable, name, content, problem):
    (evaluable / "metrics/train.json").write_text(json.dumps(TRAINING))
    (evaluable / "metrics/train_run.json").write_text(json.dumps(RUN))
    (evaluable / "metrics" / name).write_text(content)
    done = _stage(evaluable, "stages.evaluate")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {problem}"), done.stderr
    assert sorted(p.name for p in (evaluable / "metrics").iterdir()) == ["train.json", "train_run.json"]


def test_the_training_figures_are_quoted_in_the_model_card(evaluable):
    (evaluable / "metrics/train.json").write_text(json.dumps(TRAINING))
    (evaluable / "metrics/train_run.json").write_text(json.dumps(RUN))
    done = _stage(evaluable, "stages.evaluate")
    assert done.returncode == 0, done.stderr
    assert "Training stopped: completed 1 epochs." in (evaluable / "metrics/model_card.md").read_text()
