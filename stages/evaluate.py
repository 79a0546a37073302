"""Stage evaluate: score the trained model once on the test set.

Writes the test accuracy and loss (DVC metrics), precision and recall per digit and the
confusion counts (drawn by DVC's plots), and the model card (metrics/model_card.md).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import typer

from nn.training import evaluate
from stages.common.cli import run
from stages.common.dataset import RUN_KEY, check_run, read_split
from stages.common.errors import LenetError
from stages.common.model_card import model_card, precision_recall
from stages.common.model_files import PREPROCESSING, read_model
from stages.common.outputs import staged_outputs, write_json
from stages.common.params import dotted, load_params
from stages.common.paths import (CONFUSION, EVAL_METRICS, MODEL_CARD, MODELS, PER_CLASS, TEST_SPLIT,
                                 TRAIN_METRICS, TRAIN_RUN, TRAIN_SPLIT, VAL_SPLIT)

OUTPUTS = (CONFUSION, PER_CLASS, EVAL_METRICS, MODEL_CARD)  # as dvc.yaml declares them: put in place together


app = typer.Typer(add_completion=False, help=__doc__)


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """The confusion matrix ``(classes, classes)``: ``counts[a, p]`` images of class a predicted as p."""
    return np.bincount(actual * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def per_class_csv(confusion: np.ndarray) -> str:
    """Precision and recall of each digit (0 where undefined), for DVC's bar plots."""
    precision, recall = precision_recall(confusion)
    return "digit,precision,recall\n" + "".join(
        f"{digit},{precision[digit]:.6g},{recall[digit]:.6g}\n" for digit in range(len(confusion)))


def confusion_csv(confusion: np.ndarray) -> str:
    """The confusion matrix as ``actual,predicted,count`` rows (tidy data, as DVC plots read it)."""
    return "actual,predicted,count\n" + "".join(
        f"{actual},{predicted},{count}\n" for (actual, predicted), count in np.ndenumerate(confusion))


def read_training(validated: bool) -> dict:
    """metrics/train.json and train_run.json, for the model card; ``validated``: train.json must hold val_* too."""
    training = {}
    scores = {"best_epoch", "epochs_run"} | ({"val_loss", "val_accuracy"} if validated else set())
    for path, keys in ((TRAIN_METRICS, scores),
                       (TRAIN_RUN, {"stop_reason", "parameters"})):
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise LenetError(f"{path}: not valid JSON ({error}); rerun the train stage") from None
        if not isinstance(values, dict) or not keys <= values.keys():
            raise LenetError(f"{path}: expected the train stage's {', '.join(sorted(keys))}; rerun the train stage")
        training |= values
    return training


@app.command()
def main() -> None:
    """Evaluate models/model.npz on the test split."""
    params = load_params("evaluate")
    model, architecture, expected = read_model(MODELS)
    test = read_split(TEST_SPLIT)
    check_run(test, expected.get(RUN_KEY), MODELS / PREPROCESSING, rerun="train")  # same run: same mean and std
    sizes = {"train": pq.read_metadata(TRAIN_SPLIT).num_rows, "val": pq.read_metadata(VAL_SPLIT).num_rows,
             "test": len(test.labels)}
    training = read_training(sizes["val"] > 0)  # before any work: a damaged file is one line, not a traceback later
    with staged_outputs("evaluate", OUTPUTS, params) as staged:
        loss, accuracy, predictions = evaluate(model, test.images, test.labels,
                                               batch_size=params.evaluate.batch_size)
        confusion = confusion_matrix(test.labels, predictions)
        staged.path(CONFUSION).write_text(confusion_csv(confusion))
        staged.path(PER_CLASS).write_text(per_class_csv(confusion))
        write_json(staged.path(EVAL_METRICS), {"test_accuracy": accuracy, "test_loss": loss})
        staged.path(MODEL_CARD).write_text(model_card(
            architecture=architecture, params=dotted(params.train, "train"), preprocessing=expected,
            sizes=sizes, training=training, test_loss=loss, confusion=confusion))
    print(f"test accuracy {accuracy:.4f} ({int((predictions != test.labels).sum())} errors "
          f"in {len(test.labels)} images), test loss {loss:.4f}")


if __name__ == "__main__":
    run(app)
