"""Stage evaluate: score the trained model once on the test set.

Reads models/ and data/prepared/test.parquet; writes metrics/eval.json (test accuracy and
loss, per-class precision and recall) and metrics/confusion.csv (one ``actual,predicted``
row per test image, the input of DVC's ``confusion`` plot template).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

import nn
from nn.training import evaluate
from stages.common.atomic import write_json, write_text
from stages.common.cli import run
from stages.common.dataset import RUN_KEY, check_run, read_split
from stages.common.errors import StageError
from stages.common.params import Int, load_stage_params

MODEL = Path("models/model.npz")
PREPROCESSING = Path("models/preprocessing.json")
TEST = Path("data/prepared/test.parquet")
METRICS = Path("metrics/eval.json")
CONFUSION = Path("metrics/confusion.csv")
SPEC = {"evaluate.batch_size": Int(min=1, max=100_000)}

app = typer.Typer(add_completion=False, help=__doc__)


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """counts[a, p] = number of images of class a predicted as p.  Shape: (classes, classes)."""
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


@app.command()
def main() -> None:
    """Evaluate models/model.npz on the test split."""
    params = load_stage_params("evaluate", SPEC)
    if not MODEL.exists():
        raise StageError(f"{MODEL}: no trained model (run the train stage first)")
    model, _ = nn.load_model(MODEL)
    expected = json.loads(PREPROCESSING.read_text())
    test = read_split(TEST)
    check_run(test, expected.get(RUN_KEY), PREPROCESSING)
    if not np.isclose(test.metadata["mean"], expected["mean"]) or not np.isclose(test.metadata["std"], expected["std"]):
        raise StageError(f"{TEST}: normalized with mean/std {test.metadata['mean']}/{test.metadata['std']}, "
                         f"but {MODEL} was trained with {expected['mean']}/{expected['std']}")
    loss, accuracy, predictions = evaluate(model, test.images, test.labels, batch_size=params["evaluate.batch_size"])
    confusion = confusion_matrix(test.labels, predictions)
    write_text(CONFUSION, "actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in zip(test.labels, predictions)))
    write_json(METRICS, {"test_accuracy": accuracy, "test_loss": loss, "test_images": int(len(test.labels)),
                         "per_class": per_class_scores(confusion)})
    print(f"test accuracy {accuracy:.4f} ({int((predictions != test.labels).sum())} errors "
          f"in {len(test.labels)} images), test loss {loss:.4f}")


if __name__ == "__main__":
    run(app)
