"""Stage plot: draw what augmentation does and what the trained network does inside.

The loss, accuracy, learning-rate, per-digit and confusion figures are not drawn here: DVC
draws them from metrics/*.csv (the top-level ``plots:`` of dvc.yaml), and only those can be
overlaid across revisions with ``dvc plots diff``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from matplotlib.figure import Figure  # the object API: no global state, no display needed

import nn
from stages.common.cli import run
from stages.common.dataset import read_split
from stages.common.model_files import blank_value, read_model
from stages.common.outputs import staged_outputs
from stages.common.params import load_params
from stages.common.paths import MODELS, PLOTS, TEST_SPLIT, TRAIN_SPLIT

# One home for the file names: dvc.yaml's top-level plots list each of them (a test checks).
FIGURES = ("augmented.png", "conv1_filters.png", "conv1_maps.png", "conv2_maps.png", "confident_errors.png")
SAMPLES, VARIANTS = 10, 5  # augmentation figure: digits, augmented versions of each
DIGITS = 4                 # feature-map figures: the first test images
ERRORS = 16                # confident-errors grid: at most this many, 4 per row
BATCH = 1000               # forward pass of the test set, in chunks (memory, not results)


app = typer.Typer(add_completion=False, help=__doc__)


def save_figure(figure: Figure, path: Path) -> None:
    figure.savefig(path, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})


def augmentation_figure(images: np.ndarray, rng: np.random.Generator, options: dict, fill: float) -> Figure:
    """First column: originals; the others: augmented versions, as training sees them."""
    variants = [nn.augment(images, rng, fill=fill, **options) for _ in range(VARIANTS)]
    figure = Figure(figsize=(VARIANTS + 1, len(images)))
    grid = figure.subplots(len(images), VARIANTS + 1)
    for row, original in enumerate(images):
        for col, picture in enumerate([original] + [v[row] for v in variants]):
            grid[row, col].imshow(picture[0], cmap="gray_r")
            grid[row, col].axis("off")
    grid[0, 0].set_title("original", fontsize=8)
    grid[0, 1].set_title("augmented →", fontsize=8)
    return figure


def _diverging(axes, picture: np.ndarray) -> None:
    """Red positive, blue negative, white zero: the sign of a weight or response matters."""
    limit = float(np.abs(picture).max()) or 1.0
    axes.imshow(picture, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes.set_xticks([])
    axes.set_yticks([])


def filters_figure(weight: np.ndarray) -> Figure:
    """The conv1 kernels ``weight (C_out, 1, kH, kW)``, one panel each."""
    count = len(weight)
    columns = min(count, 8)
    rows = -(-count // columns)
    figure = Figure(figsize=(1.1 * columns, 1.2 * rows + 0.4))
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index < count:
            _diverging(axes, weight[index, 0])
            axes.set_title(f"filter {index}", fontsize=7)
        else:
            axes.axis("off")
    figure.suptitle(f"conv1: {count} learned {weight.shape[2]}×{weight.shape[3]} filters", fontsize=10)
    return figure


def feature_maps_figure(images: np.ndarray, maps: np.ndarray, layer: str) -> Figure:
    """Each row: a digit of ``images (N, 1, 28, 28)``, then every channel of ``layer``'s ``maps (N, C, H, W)``."""
    count, channels = maps.shape[:2]
    figure = Figure(figsize=(0.75 * (channels + 1), 0.8 * count + 0.4))
    grid = figure.subplots(count, channels + 1, squeeze=False)
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
    """At most ``limit`` indices of the wrong predictions, most confident first (ties: lower index first)."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]


def errors_figure(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, indices: np.ndarray) -> Figure:
    """The test digits at ``indices`` with true label, prediction and its probability."""
    columns = 4
    rows = max(1, -(-len(indices) // columns))
    figure = Figure(figsize=(1.6 * columns, 1.8 * rows + 0.4))
    grid = figure.subplots(rows, columns, squeeze=False)
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


def predict_probabilities(model, images: np.ndarray) -> np.ndarray:
    """Softmax outputs ``(N, classes)`` float64 of ``model`` in eval mode, for ``images (N, 1, 28, 28)``."""
    model.eval()
    return np.concatenate([nn.softmax(model.forward(images[start:start + BATCH]).astype(np.float64))
                           for start in range(0, len(images), BATCH)])


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
    print(f"wrote {len(FIGURES)} plots to {PLOTS}/")


if __name__ == "__main__":
    run(app)
