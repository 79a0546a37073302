"""Stage evaluate: score the trained model once on the test set.

Reads models/ and data/prepared/test.parquet; writes metrics/eval.json (test accuracy and
loss, per-class precision and recall), metrics/confusion.csv (one ``actual,predicted``
row per test image, the input of DVC's ``confusion`` plot template) and the model card,
metrics/model_card.md (with the training params and metrics/train.json's figures).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import typer

from nn.training import evaluate
from stages.common.atomic import write_json, write_text
from stages.common.model_card import model_card
from stages.common.cli import run
from stages.common.dataset import RUN_KEY, check_run, read_split
from stages.common.errors import StageError, first_line
from stages.common.model_files import MODELS, PREPROCESSING, read_model
from stages.common.outputs import staged_outputs
from stages.common.param_rules import Int
from stages.common.param_sections import dotted, param
from stages.common.params import StageParams, load_stage_params
from stages.common.train_spec import TrainParams

TEST = Path("data/prepared/test.parquet")
TRAIN = Path("data/prepared/train.parquet")
VAL = Path("data/prepared/val.parquet")
TRAIN_METRICS = Path("metrics/train.json")
CARD = Path("metrics/model_card.md")
METRICS = Path("metrics/eval.json")
CONFUSION = Path("metrics/confusion.csv")
OUTPUTS = (CONFUSION, METRICS, CARD)  # as dvc.yaml declares them: swapped in together
CARD_FIGURES = ("parameters", "best_epoch", "epochs_run", "val_loss", "val_accuracy", "stop_reason")


@dataclass(frozen=True)
class EvaluateParams:
    """``evaluate``: how many test images go through the network at once (memory, not results)."""

    batch_size: int = param(Int(min=1, max=100_000))


@dataclass(frozen=True)
class Params(StageParams):
    """What this stage reads from params.yaml."""

    evaluate: EvaluateParams
    train: TrainParams  # read only to be listed in the model card


app = typer.Typer(add_completion=False, help=__doc__)


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """The confusion matrix: ``counts[a, p]`` = number of images of class a predicted as p.

    Parameters
    ----------
    actual, predicted : (N,) int
        Classes in [0, classes).
    classes : int, default 10

    Returns
    -------
    counts : (classes, classes) int
    """
    return np.bincount(actual * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def per_class_scores(confusion: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision and recall of each class from a confusion matrix (0 where undefined)."""
    true_positives = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    recall = np.divide(true_positives, actual, out=np.zeros_like(true_positives), where=actual > 0)
    return {str(c): {"precision": float(precision[c]), "recall": float(recall[c])}
            for c in range(len(confusion))}


def training_figures() -> dict:
    """metrics/train.json, whose figures (``CARD_FIGURES``) the model card quotes; StageError if unreadable."""
    try:
        training = json.loads(TRAIN_METRICS.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise StageError(f"{TRAIN_METRICS}: not valid JSON ({first_line(error)}); rerun the train stage") from None
    missing = [key for key in CARD_FIGURES if not isinstance(training, dict) or key not in training]
    if missing:
        raise StageError(f"{TRAIN_METRICS}: has no {', '.join(missing)}; rerun the train stage")
    return training


@app.command()
def main() -> None:
    """Evaluate models/model.npz on the test split."""
    params = load_stage_params("evaluate", Params)
    model, architecture, expected = read_model(MODELS)
    test = read_split(TEST)
    check_run(test, expected.get(RUN_KEY), MODELS / PREPROCESSING)
    if not np.isclose(test.metadata["mean"], expected["mean"]) or not np.isclose(test.metadata["std"], expected["std"]):
        raise StageError(f"{TEST}: normalized with mean/std {test.metadata['mean']}/{test.metadata['std']}, "
                         f"but {MODELS} was trained with {expected['mean']}/{expected['std']}")
    training = training_figures()
    with staged_outputs("evaluate", OUTPUTS, params) as staged:
        loss, accuracy, predictions = evaluate(model, test.images, test.labels,
                                               batch_size=params.evaluate.batch_size)
        confusion = confusion_matrix(test.labels, predictions)
        write_text(staged.path(CONFUSION),
                   "actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in zip(test.labels, predictions)))
        write_json(staged.path(METRICS), {"test_accuracy": accuracy, "test_loss": loss,
                                          "test_images": int(len(test.labels)),
                                          "per_class": per_class_scores(confusion)})
        write_text(staged.path(CARD), model_card(
            architecture=architecture, params=dotted(params.train, "train"), preprocessing=expected,
            sizes={"train": pq.read_metadata(TRAIN).num_rows, "val": pq.read_metadata(VAL).num_rows,
                   "test": len(test.labels)},
            training=training, test_loss=loss, confusion=confusion))
    print(f"test accuracy {accuracy:.4f} ({int((predictions != test.labels).sum())} errors "
          f"in {len(test.labels)} images), test loss {loss:.4f}")


if __name__ == "__main__":
    run(app)
