"""Stage evaluate: score the trained model once on the test set.

Reads models/ and data/prepared/test.parquet; writes metrics/eval.json (test accuracy and
loss, per-class precision and recall), metrics/confusion.csv (one ``actual,predicted``
row per test image, the input of DVC's ``confusion`` plot template) and the model card,
metrics/model_card.md (with the training params and metrics/train.json's figures).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import typer

from nn.training import evaluate
from stages.common.cli import run
from stages.common.dataset import RUN_KEY, check_run, read_split
from stages.common.errors import LenetError, first_line
from stages.common.model_card import model_card
from stages.common.model_files import PREPROCESSING, read_model
from stages.common.outputs import staged_outputs, write_json
from stages.common.params import dotted, load_params
from stages.common.paths import (CONFUSION, EVAL_METRICS, MODEL_CARD, MODELS, TEST_SPLIT, TRAIN_METRICS,
                                 TRAIN_SPLIT, VAL_SPLIT)

OUTPUTS = (CONFUSION, EVAL_METRICS, MODEL_CARD)  # as dvc.yaml declares them: put in place together
CARD_FIGURES = ("parameters", "best_epoch", "epochs_run", "val_loss", "val_accuracy", "stop_reason")


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
    """metrics/train.json, whose figures (``CARD_FIGURES``) the model card quotes; LenetError if unreadable."""
    try:
        training = json.loads(TRAIN_METRICS.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise LenetError(f"{TRAIN_METRICS}: not valid JSON ({first_line(error)}); rerun the train stage") from None
    missing = [key for key in CARD_FIGURES if not isinstance(training, dict) or key not in training]
    if missing:
        raise LenetError(f"{TRAIN_METRICS}: has no {', '.join(missing)}; rerun the train stage")
    return training


@app.command()
def main() -> None:
    """Evaluate models/model.npz on the test split."""
    params = load_params("evaluate")
    model, architecture, expected = read_model(MODELS)
    test = read_split(TEST_SPLIT)
    check_run(test, expected.get(RUN_KEY), MODELS / PREPROCESSING)
    if not np.isclose(test.metadata["mean"], expected["mean"]) or not np.isclose(test.metadata["std"], expected["std"]):
        raise LenetError(f"{TEST_SPLIT}: normalized with mean/std {test.metadata['mean']}/{test.metadata['std']}, "
                         f"but {MODELS} was trained with {expected['mean']}/{expected['std']}")
    training = training_figures()
    with staged_outputs("evaluate", OUTPUTS, params) as staged:
        loss, accuracy, predictions = evaluate(model, test.images, test.labels,
                                               batch_size=params.evaluate.batch_size)
        confusion = confusion_matrix(test.labels, predictions)
        staged.path(CONFUSION).write_text(
            "actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in zip(test.labels, predictions)))
        write_json(staged.path(EVAL_METRICS), {"test_accuracy": accuracy, "test_loss": loss,
                                          "test_images": int(len(test.labels)),
                                          "per_class": per_class_scores(confusion)})
        staged.path(MODEL_CARD).write_text(model_card(
            architecture=architecture, params=dotted(params.train, "train"), preprocessing=expected,
            sizes={"train": pq.read_metadata(TRAIN_SPLIT).num_rows, "val": pq.read_metadata(VAL_SPLIT).num_rows,
                   "test": len(test.labels)},
            training=training, test_loss=loss, confusion=confusion))
    print(f"test accuracy {accuracy:.4f} ({int((predictions != test.labels).sum())} errors "
          f"in {len(test.labels)} images), test loss {loss:.4f}")


if __name__ == "__main__":
    run(app)
