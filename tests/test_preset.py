"""The report's setup as a Hydra preset: what it composes to, and a real ``dvc exp run -S +preset=tutorial``.

DVC composes ``preset/tutorial.yaml`` over ``params.yaml`` (``[hydra]`` in ``.dvc/config``);
``lenet.studies.compose`` does the same with Hydra's own API, so these tests see what a run sees.
"""

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from lenet.studies import HYDRA_CONFIG_DIR, HYDRA_CONFIG_NAME, compose, dotted
from lenet.study_plans import ABLATION_STEPS, PRESET
from stages.common.params import Params
from tests.mnist_mirror import MIRROR, needs_mirror
from tests.scratch_project import commit_all, copy_project, init_repo

ROOT = Path(__file__).resolve().parents[1]
PRESET_FILE = ROOT / "preset" / "tutorial.yaml"


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_dvc_composes_params_yaml_itself_with_the_preset_group():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    hydra = {key: value.strip() for key, value in config['"hydra"' if '"hydra"' in config else "hydra"].items()}
    assert hydra == {"enabled": "true", "config_dir": HYDRA_CONFIG_DIR, "config_name": HYDRA_CONFIG_NAME}
    assert (ROOT / HYDRA_CONFIG_DIR / f"{HYDRA_CONFIG_NAME}.yaml").is_file()
    # The group is the directory: `+preset=tutorial` needs preset/tutorial.yaml, merged at the top.
    assert PRESET == "+preset=tutorial"
    assert PRESET_FILE.read_text(encoding="utf-8").splitlines()[0] == "# @package _global_"


def test_the_preset_composes_to_valid_params_that_differ_only_in_its_keys(at_root):
    default, tutorial = compose([]), compose([PRESET])
    Params.model_validate(tutorial)  # the rules of params.yaml (params.schema.json is made from them)
    preset = dotted(YAML(typ="safe", pure=True).load(PRESET_FILE))
    changed = {key for key, value in dotted(tutorial).items() if dotted(default)[key] != value}
    assert changed <= set(preset) and set(dotted(tutorial)) == set(dotted(default))
    assert all(dotted(tutorial)[key] == value for key, value in preset.items())
    # The report's setup, as its sections 4.6-5.1 give it.
    assert {key: dotted(tutorial)[key] for key in (
        "normalize.val_size", "normalize.scale", "train.lr", "train.batch_size", "train.epochs",
        "train.loss_reduction", "train.activation", "train.pool", "train.init", "train.bias_init")} == {
        "normalize.val_size": 0, "normalize.scale": "unit256", "train.lr": 0.0015, "train.batch_size": 64,
        "train.epochs": 50, "train.loss_reduction": "sum", "train.activation": "sigmoid", "train.pool": "avg",
        "train.init": "randn", "train.bias_init": "randn"}


def test_command_line_values_win_over_the_preset(at_root):
    assert compose([PRESET, "train.lr=0.002"])["train"]["lr"] == 0.002
    assert compose(["train.lr=0.002", PRESET])["train"]["lr"] == 0.002  # whatever the order


def test_the_ablation_covers_every_difference_but_the_last_rows(at_root):
    default, tutorial = dotted(compose([])), dotted(compose([PRESET]))
    stepped = {key for _, _, keys in ABLATION_STEPS for key in keys}
    left = {key for key in default if default[key] != tutorial[key]} - stepped
    # What only the last row (params.yaml itself) changes: the validation split and what uses it.
    assert left == {"normalize.val_size", "train.epochs", "train.early_stopping.monitor",
                    "train.early_stopping.patience"}


@pytest.mark.slow
@needs_mirror
def test_a_real_dvc_exp_run_with_the_preset_trains_as_the_report_did(tmp_path):
    repo = tmp_path / "repo"
    copy_project(repo)
    init_repo(repo)
    commit_all(repo, "start")
    env = dict(os.environ, MNIST_MIRROR=str(MIRROR),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    run = subprocess.run(["dvc", "exp", "run", "-n", "tiny", "-S", PRESET, "-S", "normalize.limit=2000",
                          "-S", "train.epochs=2", "-S", "train.lr=0.005"],
                         cwd=repo, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    params = YAML(typ="safe", pure=True).load(repo / "params.yaml")  # as Hydra wrote it back
    assert (params["normalize"]["val_size"], params["train"]["activation"], params["train"]["lr"]) == (0, "sigmoid", 0.005)
    assert "peak memory:" in run.stderr + run.stdout

    train = json.loads((repo / "metrics/train.json").read_text())
    assert sorted(train) == ["best_epoch", "epochs_run", "train_accuracy", "train_loss"]  # no validation
    assert train["best_epoch"] == train["epochs_run"] == 2  # the last epoch is kept
    history = (repo / "metrics/history.csv").read_text().splitlines()
    assert history[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr"
    assert [row.split(",")[3:5] for row in history[1:]] == [["", ""]] * 2  # absent, not faked
    assert json.loads((repo / "models/preprocessing.json").read_text())["std"] == 256 / 255
    card = (repo / "metrics/model_card.md").read_text()
    assert "2,000 training images, no validation split" in card and "| `train.bias_init` | randn |" in card
    assert json.loads((repo / "metrics/eval.json").read_text())["test_accuracy"] > 0.2  # chance: 0.1; sigmoid learns slowly
