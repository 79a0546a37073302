"""The evaluate and plot stages on a tiny untrained model and split: every figure, the model
card, each figure declared once in dvc.yaml."""

import json
import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from ruamel.yaml import YAML

import nn
from stages import evaluate, plot
from stages.common.dataset import RUN_KEY, write_split
from stages.common.model_files import write_model
from tests.test_train_stage import toy_pixels

ROOT = Path(__file__).resolve().parents[1]
RUN = "0" * 64  # the normalize run id every tiny split and the model share


@pytest.fixture
def project(tmp_path, monkeypatch):
    """dvc.yaml, params.yaml, a 4/8-channel LeNet-5 (random weights) and tiny splits."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    rng = np.random.default_rng(0)
    for split, n in [("train", 60), ("val", 20), ("test", 120)]:
        pixels, labels = toy_pixels(n, rng)
        write_split(tmp_path / f"data/prepared/{split}.parquet", pixels, labels, np.arange(n),
                    mean=0.2, std=0.35, run_id=RUN, info={"split": split})
    config = {"channels": [4, 8], "hidden": [16, 12]}
    write_model(tmp_path / "models", nn.lenet5(rng=rng, **config), config,
                {"mean": 0.2, "std": 0.35, RUN_KEY: RUN})
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/train.json").write_text(json.dumps({
        "best_epoch": 2, "epochs_run": 3, "train_loss": 2.0, "train_accuracy": 0.2, "val_loss": 2.1, "val_accuracy": 0.15}))
    (tmp_path / "metrics/train_run.json").write_text(json.dumps({
        "stop_reason": "completed 3 epochs", "parameters": 1234}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_evaluate_then_plot_write_every_figure_and_the_card(project):
    evaluate.main()
    plot.main()
    pngs = sorted(p.name for p in (project / "plots").iterdir())
    assert pngs == sorted(plot.FIGURES)
    for name in pngs:
        image = plt.imread(project / "plots" / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0.05, name
    card = (project / "metrics/model_card.md").read_text()
    assert "Parameters: 1,234" in card and "60 training images, 20 validation images" in card
    assert "| `train.lr` | 0.05 |" in card and "best epoch 2 of 3" in card


@pytest.mark.slow  # renders every figure twice (~4 s)
def test_plot_and_card_bytes_are_the_same_on_a_rerun(project):
    evaluate.main()
    plot.main()
    first = {p.name: p.read_bytes() for p in (project / "plots").iterdir()}
    card = (project / "metrics/model_card.md").read_bytes()
    evaluate.main()
    plot.main()
    assert {p.name: p.read_bytes() for p in (project / "plots").iterdir()} == first
    assert (project / "metrics/model_card.md").read_bytes() == card


def test_dvc_yaml_declares_each_figure_once_and_no_png_of_a_vega_plot():
    dvc = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())
    entries = dvc["plots"]
    images = [entry for entry in entries if isinstance(entry, str)]
    # augmented.png stays off the page: the same picture in every revision with the same augmentation
    assert sorted(images) == sorted(f"plots/{name}" for name in plot.FIGURES if name != "augmented.png")
    vega = {name: spec for entry in entries if isinstance(entry, dict) for name, spec in entry.items()}
    assert list(vega) == ["Loss", "Accuracy", "Learning rate", "Test recall per digit", "Test precision per digit",
                          "Test confusion matrix"]
    assert all(spec.get("y_label") or spec.get("x_label") for spec in vega.values())  # no axis called "y"
    assert (ROOT / ".dvc/plots" / f"{vega['Test confusion matrix']['template']}.json").is_file()
    for stage in dvc["stages"].values():  # a stage's plots: would render a figure twice
        assert "plots" not in stage
    assert dvc["metrics"] == ["metrics/eval.json", "metrics/train.json"]  # test figures first


def test_confident_errors_orders_by_the_wrong_class_probability():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7], [0.7, 0.3]])
    labels = np.array([1, 0, 0, 1, 0])
    # wrong: 0 (p 0.9), 1 (0.8), 2 (0.6); image 3 and 4 are right
    assert plot.confident_errors(probabilities, labels, 10).tolist() == [0, 1, 2]
    assert plot.confident_errors(probabilities, labels, 2).tolist() == [0, 1]
    assert plot.confident_errors(probabilities, np.array([0, 1, 1, 1, 0]), 5).tolist() == []


def test_figures_have_a_panel_per_filter_map_and_error():
    weight = np.random.default_rng(0).normal(size=(6, 1, 5, 5))
    figure = plot.filters_figure(weight)
    assert sum(bool(axes.images) for axes in figure.axes) == 6
    plt.close(figure)
    images, maps = np.zeros((3, 1, 28, 28)), np.random.default_rng(1).normal(size=(3, 5, 10, 10))
    figure = plot.feature_maps_figure(images, maps, "conv2")
    assert sum(bool(axes.images) for axes in figure.axes) == 3 * (5 + 1)
    plt.close(figure)
    probabilities = np.full((4, 10), 0.05)
    probabilities[:, 3] = 0.55
    figure = plot.errors_figure(np.zeros((4, 1, 28, 28)), np.array([1, 3, 2, 3]), probabilities, np.array([0, 2]))
    titles = [axes.get_title() for axes in figure.axes if axes.images]
    assert titles == ["true 1, pred 3\np = 0.550", "true 2, pred 3\np = 0.550"]
    plt.close(figure)


def test_evaluate_refuses_train_metrics_it_cannot_read(project):
    (project / "metrics/train_run.json").write_text("{")
    with pytest.raises(Exception, match=re.escape("metrics/train_run.json: not valid JSON")):
        evaluate.main()
    (project / "metrics/train_run.json").write_text("{}")
    with pytest.raises(Exception, match=re.escape("metrics/train_run.json: expected the train stage's parameters")):
        evaluate.main()
