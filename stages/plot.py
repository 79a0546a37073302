"""Stage plot: draw the training curves, the confusion matrix and what augmentation does.

Reads metrics/history.csv, metrics/confusion.csv and data/prepared/train.parquet; writes
PNGs to plots/ (all built in a staging area, then swapped in together; ``dvc plots show``
also renders them).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import typer  # noqa: E402

import nn  # noqa: E402
from stages.common.atomic import atomic_write  # noqa: E402
from stages.common.cli import run  # noqa: E402
from stages.common.dataset import read_split  # noqa: E402
from stages.common.errors import StageError  # noqa: E402
from stages.common.outputs import staged_outputs  # noqa: E402
from stages.common.params import Int, load_stage_params  # noqa: E402
from stages.common.train_spec import AUGMENT_SPEC, augment_kwargs  # noqa: E402

HISTORY = Path("metrics/history.csv")
CONFUSION = Path("metrics/confusion.csv")
TRAIN = Path("data/prepared/train.parquet")
PLOTS = Path("plots")
SPEC = {"train.seed": Int(min=0), **AUGMENT_SPEC}
SAMPLES, VARIANTS = 10, 5

app = typer.Typer(add_completion=False, help=__doc__)


def read_csv_columns(path: Path) -> dict[str, np.ndarray]:
    """A small numeric CSV with a header row, as one float array per column."""
    try:
        lines = path.read_text().strip().splitlines()
        names = lines[0].split(",")
        values = np.array([[float(v) for v in line.split(",")] for line in lines[1:]], ndmin=2)
    except (OSError, ValueError, IndexError) as error:
        raise StageError(f"{path}: not a readable numeric CSV ({error})") from None
    if values.size == 0:
        raise StageError(f"{path}: has no rows")
    return {name: values[:, i] for i, name in enumerate(names)}


def save_figure(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def curve(history: dict, columns: list[str], title: str, ylabel: str, log: bool = False):
    figure, axes = plt.subplots(figsize=(6, 4))
    for column in columns:
        axes.plot(history["epoch"], history[column], marker="o", markersize=3, label=column.replace("_", " "))
    axes.set(title=title, xlabel="epoch", ylabel=ylabel)
    if log:
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def confusion_figure(actual: np.ndarray, predicted: np.ndarray):
    counts = np.bincount(actual * 10 + predicted, minlength=100).reshape(10, 10)
    figure, axes = plt.subplots(figsize=(6, 5.5))
    # Log colours: the diagonal holds ~1000 per class, the errors a handful.
    image = axes.imshow(np.log1p(counts), cmap="Blues")
    for a in range(10):
        for p in range(10):
            if counts[a, p]:
                axes.text(p, a, str(counts[a, p]), ha="center", va="center", fontsize=7,
                          color="white" if counts[a, p] > counts.max() / 3 else "black")
    axes.set(title=f"Confusion matrix ({int(np.trace(counts))}/{counts.sum()} correct)",
             xlabel="predicted", ylabel="actual", xticks=range(10), yticks=range(10))
    figure.colorbar(image, ax=axes, label="log(1 + count)")
    return figure


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


@app.command()
def main() -> None:
    """Draw every plot into plots/."""
    params = load_stage_params("plot", SPEC)
    history = read_csv_columns(HISTORY)
    confusion = read_csv_columns(CONFUSION)
    train = read_split(TRAIN)
    with staged_outputs("plot", [PLOTS], params) as staged:
        out = staged.path(PLOTS)
        out.mkdir()
        save_figure(curve(history, ["train_loss", "val_loss"], "Cross-entropy loss", "loss", log=True),
                    out / "loss.png")
        save_figure(curve(history, ["train_accuracy", "val_accuracy"], "Accuracy", "accuracy"), out / "accuracy.png")
        save_figure(curve(history, ["lr"], "Learning rate", "lr"), out / "learning_rate.png")
        save_figure(confusion_figure(confusion["actual"].astype(np.int64), confusion["predicted"].astype(np.int64)),
                    out / "confusion.png")
        fill = (0.0 - train.metadata["mean"]) / train.metadata["std"]
        rng = np.random.default_rng(params["train.seed"])
        save_figure(augmentation_figure(train.images[:SAMPLES], rng, augment_kwargs(params), fill),
                    out / "augmented.png")
        count = len(list(out.glob("*.png")))
    print(f"wrote {count} plots to {PLOTS}/")


if __name__ == "__main__":
    run(app)
