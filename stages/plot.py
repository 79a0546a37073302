"""Stage plot: draw what augmentation does and what the trained network does inside.

Reads models/, data/prepared/train.parquet and test.parquet, and metrics/eval.json; writes
PNGs to plots/ (all built in a staging area, then swapped in together). The loss, accuracy,
learning-rate and confusion figures are not drawn here: DVC draws them from metrics/*.csv
(the top-level ``plots:`` of dvc.yaml), and only those can be compared across revisions with
``dvc plots diff``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import typer  # noqa: E402

import nn  # noqa: E402
from stages.common.cli import run  # noqa: E402
from stages.common.dataset import read_split  # noqa: E402
from stages.common.errors import LenetError  # noqa: E402
from stages.common.model_files import blank_value, read_model  # noqa: E402
from stages.common.outputs import staged_outputs  # noqa: E402
from stages.common.params import load_params  # noqa: E402
from stages.common.paths import EVAL_METRICS, MODELS, PLOTS, TEST_SPLIT, TRAIN_SPLIT  # noqa: E402

# One home for the file names: dvc.yaml's top-level plots list each of them (a test checks).
FIGURES = ("augmented.png", "conv1_filters.png", "conv1_maps.png", "conv2_maps.png",
           "confident_errors.png", "per_class_accuracy.png")
SAMPLES, VARIANTS = 10, 5  # augmentation figure: digits, augmented versions of each
DIGITS = 4                 # feature-map figures: the first test images
ERRORS = 16                # confident-errors grid: at most this many, 4 per row
BATCH = 1000               # forward pass of the test set, in chunks (memory, not results)


app = typer.Typer(add_completion=False, help=__doc__)


def save_figure(figure, path: Path) -> None:
    figure.savefig(path, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)


def augmentation_figure(images: np.ndarray, rng: np.random.Generator, options: dict, fill: float):
    """First column: originals; the others: augmented versions, as training sees them."""
    variants = [nn.augment(images, rng, fill=fill, **options) for _ in range(VARIANTS)]
    figure, grid = plt.subplots(len(images), VARIANTS + 1, figsize=(VARIANTS + 1, len(images)))
    for row, original in enumerate(images):
        for col, picture in enumerate([original] + [v[row] for v in variants]):
            grid[row, col].imshow(picture[0], cmap="gray_r")
            grid[row, col].axis("off")
    grid[0, 0].set_title("original", fontsize=8)
    grid[0, 1].set_title("augmented →", fontsize=8)
    return figure


def _diverging(axes, picture: np.ndarray):
    """Red positive, blue negative, white zero: the sign of a weight or response matters."""
    limit = float(np.abs(picture).max()) or 1.0
    axes.imshow(picture, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes.set_xticks([])
    axes.set_yticks([])


def filters_figure(weight: np.ndarray):
    """The conv1 kernels, one panel each.

    Parameters
    ----------
    weight : (C_out, 1, kH, kW)

    Returns
    -------
    matplotlib.figure.Figure
    """
    count = len(weight)
    columns = min(count, 8)
    rows = -(-count // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(1.1 * columns, 1.2 * rows + 0.4), squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index < count:
            _diverging(axes, weight[index, 0])
            axes.set_title(f"filter {index}", fontsize=7)
        else:
            axes.axis("off")
    figure.suptitle(f"conv1: {count} learned {weight.shape[2]}×{weight.shape[3]} filters", fontsize=10)
    return figure


def feature_maps_figure(images: np.ndarray, maps: np.ndarray, layer: str):
    """Each row: a digit, then every channel of ``layer``'s output for it.

    Parameters
    ----------
    images : (N, 1, 28, 28)
    maps : (N, C, H, W)
        ``layer``'s output for ``images``.
    layer : str
        Its name, for the title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    count, channels = maps.shape[:2]
    figure, grid = plt.subplots(count, channels + 1, figsize=(0.75 * (channels + 1), 0.8 * count + 0.4),
                                squeeze=False)
    for row in range(count):
        grid[row, 0].imshow(images[row, 0], cmap="gray_r")
        grid[row, 0].axis("off")
        for channel in range(channels):
            _diverging(grid[row, channel + 1], maps[row, channel])
    grid[0, 0].set_title("input", fontsize=7)
    for channel in range(channels):
        grid[0, channel + 1].set_title(str(channel), fontsize=7)
    figure.suptitle(f"{layer} feature maps ({maps.shape[2]}×{maps.shape[3]}, before activation and pooling)",
                    fontsize=10)
    return figure


def confident_errors(probabilities: np.ndarray, labels: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the wrong predictions, most confident first (ties: lower index first).

    Parameters
    ----------
    probabilities : (N, classes)
    labels : (N,)
    limit : int
        At most this many indices.

    Returns
    -------
    indices : (min(limit, errors),)
    """
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]


def errors_figure(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, indices: np.ndarray):
    """The test digits at ``indices`` with true label, prediction and its probability."""
    columns = 4
    rows = max(1, -(-len(indices) // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows + 0.4), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, indices):
        predicted = int(probabilities[index].argmax())
        axes.imshow(images[index, 0], cmap="gray_r")
        axes.set_title(f"true {labels[index]}, pred {predicted}\np = {probabilities[index, predicted]:.3f}",
                       fontsize=8)
    title = "Most confident wrong test predictions" if len(indices) else "No wrong test predictions"
    figure.suptitle(title, fontsize=10)
    return figure


def per_class_figure(recall: np.ndarray):
    """Bar per digit: the fraction of its test images classified correctly (its recall).

    Parameters
    ----------
    recall : (classes,)
        In [0, 1].

    Returns
    -------
    matplotlib.figure.Figure
    """
    figure, axes = plt.subplots(figsize=(6, 3.5))
    classes = np.arange(len(recall))
    bars = axes.bar(classes, 100 * recall, color="#4c72b0")
    for bar, value in zip(bars, recall):
        axes.annotate(f"{100 * value:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=7)
    low = max(0.0, float(np.floor(100 * recall.min())) - 1)  # zoom in: the differences are small
    axes.set(title="Test accuracy per class", xlabel="true digit", ylabel="correct (%)", xticks=classes,
             ylim=(low, 100.6))
    axes.grid(axis="y", alpha=0.3)
    return figure


def predict_probabilities(model, images: np.ndarray) -> np.ndarray:
    """Softmax outputs of ``model`` in eval mode.

    Parameters
    ----------
    model : nn.Module
    images : (N, 1, 28, 28)

    Returns
    -------
    probabilities : (N, classes) float64
    """
    model.eval()
    return np.concatenate([nn.softmax(model.forward(images[start:start + BATCH]).astype(np.float64))
                           for start in range(0, len(images), BATCH)])


def read_recall(path: Path) -> np.ndarray:
    """Per-class recall (= accuracy on that class's images) from evaluate's metrics."""
    try:
        per_class = json.loads(path.read_text())["per_class"]
        return np.array([per_class[str(c)]["recall"] for c in range(len(per_class))])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LenetError(f"{path}: expected evaluate's metrics with per_class recall ({error!r})") from None


@app.command()
def main() -> None:
    """Draw every plot into plots/."""
    params = load_params("plot")
    train = read_split(TRAIN_SPLIT)
    test = read_split(TEST_SPLIT)
    model, _, _ = read_model(MODELS)
    with staged_outputs("plot", [PLOTS], params) as staged:
        out = staged.path(PLOTS)
        out.mkdir()
        fill = blank_value(train.metadata["mean"], train.metadata["std"])
        rng = np.random.default_rng(params.train.seed)
        save_figure(augmentation_figure(train.images[:SAMPLES], rng, params.train.augment.model_dump(), fill),
                    out / "augmented.png")
        save_figure(filters_figure(model.conv1.params["weight"]), out / "conv1_filters.png")
        _, maps = nn.feature_maps(model, test.images[:DIGITS], ("conv1", "conv2"))
        for layer, layer_maps in maps.items():
            save_figure(feature_maps_figure(test.images[:DIGITS], layer_maps, layer), out / f"{layer}_maps.png")
        probabilities = predict_probabilities(model, test.images)
        worst = confident_errors(probabilities, test.labels, ERRORS)
        save_figure(errors_figure(test.images, test.labels, probabilities, worst), out / "confident_errors.png")
        save_figure(per_class_figure(read_recall(EVAL_METRICS)), out / "per_class_accuracy.png")
    print(f"wrote {len(FIGURES)} plots to {PLOTS}/")


if __name__ == "__main__":
    run(app)
