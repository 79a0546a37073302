"""The train stage as a user runs it: outputs, checkpoints, resume after a kill, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stages.common.dataset import write_split
from tests.params_file import set_params

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"train.epochs": 3, "train.batch_size": 16, "train.warmup_epochs": 0.5,
         "train.channels": [4, 8], "train.hidden": [32, 16],
         "train.augment.elastic_alpha": 2.0}


def toy_pixels(n: int, rng: np.random.Generator):
    """uint8 'digits': a bright square whose place tells the class, on a noisy background."""
    labels = rng.integers(0, 10, n)
    pixels = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for c in range(10):
        r, col = divmod(c, 4)
        pixels[labels == c, 2 + 6 * r:7 + 6 * r, 2 + 6 * col:7 + 6 * col] = 250
    return pixels, labels




@pytest.fixture
def project(tmp_path):
    """A scratch project holding dvc.yaml, small params and a small prepared dataset."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    set_params(tmp_path, SMALL)
    rng = np.random.default_rng(0)
    for split, n in [("train", 480), ("val", 160)]:
        pixels, labels = toy_pixels(n, rng)
        write_split(tmp_path / f"data/prepared/{split}.parquet", pixels, labels, np.arange(n),
                    mean=0.2, std=0.35, run_id="0" * 64, info={"split": split})
    return tmp_path


def start_training(root: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def train(root: Path) -> str:
    process = start_training(root)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return err


def outputs(root: Path):
    with np.load(root / "models/model.npz", allow_pickle=False) as archive:
        weights = {k: archive[k] for k in archive.files}
    history = (root / "metrics/history.csv").read_text()
    return weights, (root / "metrics/train.json").read_text(), history


@pytest.mark.slow  # a training process
def test_outputs_of_a_run(project):
    log = train(project)
    assert "epoch 3/3" in log and not (project / "checkpoints/train.npz").exists()
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["val_accuracy"] > 0.5
    assert metrics["stop_reason"] == "completed 3 epochs"
    config = json.loads((project / "models/model.json").read_text())
    assert config["channels"] == [4, 8]
    assert json.loads((project / "models/preprocessing.json").read_text()) == {
        "mean": 0.2, "std": 0.35, "normalize_run": "0" * 64}  # the run the splits came from


@pytest.mark.slow  # a training process
def test_killed_mid_epoch_then_rerun_ends_bit_identical(project, tmp_path_factory):
    reference = tmp_path_factory.mktemp("uninterrupted")
    shutil.copytree(project, reference, dirs_exist_ok=True)
    train(reference)

    checkpoint = project / "checkpoints/train.npz"
    process = start_training(project)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGSTOP)  # frozen after its first checkpoint: no race with its end
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (project / "models").exists() and not (project / "metrics/train.json").exists()

    log = train(project)
    assert "resuming from checkpoints/train.npz after epoch" in log
    weights, metrics, history = outputs(project)
    ref_weights, ref_metrics, ref_history = outputs(reference)
    assert metrics == ref_metrics and history == ref_history
    assert weights.keys() == ref_weights.keys()
    for name in weights:
        assert weights[name].tobytes() == ref_weights[name].tobytes(), name


@pytest.mark.slow  # a training process
def test_a_checkpoint_from_other_params_is_not_resumed(project):
    process = start_training(project)
    checkpoint = project / "checkpoints/train.npz"
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.005)
    process.kill()
    process.communicate()
    set_params(project, {"train.lr": 0.01})
    log = train(project)
    assert "ignoring checkpoints/train.npz: it belongs to other params" in log
    assert json.loads((project / "metrics/train.json").read_text())["epochs_run"] == 3


@pytest.mark.slow  # a training process
def test_divergence_fails_cleanly_with_no_outputs(project):
    set_params(project, {"train.lr": 10.0, "train.init": "randn", "train.warmup_epochs": 0})
    process = start_training(project)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1
    assert err.strip().splitlines()[-1].startswith("error: training diverged: loss is")
    assert "try a smaller train.lr" in err
    assert not (project / "models").exists() and not (project / "metrics/train.json").exists()


@pytest.mark.parametrize("change, message", [
    ({"train.optimizer": "rmsprop"}, "train.optimizer must be 'sgd', 'adam' or 'adamw', got 'rmsprop'"),
    ({"train.loss_reduction": "max"}, "train.loss_reduction must be 'mean' or 'sum', got 'max'"),
    ({"train.early_stopping.patience": -1}, "train.early_stopping.patience must be greater than or equal to 0, got -1"),
    ({"train.augment.max_scale": 1.5}, "train.augment.max_scale must be less than 1, got 1.5"),
    ({"train.warmup_epochs": 5}, "train.warmup_epochs must be < train.epochs (3)"),
])
def test_invalid_params_fail_before_any_work(project, change, message):
    set_params(project, change)
    (project / "data/prepared/train.parquet").unlink()  # proves no data was even read
    process = start_training(project)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert err.strip().startswith(f"error: params.yaml: {message}") and len(err.strip().splitlines()) == 1
