"""The model card, metrics/model_card.md: what the model is, how well it does, what it is not for.

Written by the evaluate stage. Pure text from the numbers it is given: no clock, no paths of
this machine, so the same model and data give the same bytes.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

CONFUSED_PAIRS = 5  # most frequent (actual, predicted) errors listed


def most_confused(confusion: np.ndarray, limit: int = CONFUSED_PAIRS) -> list[tuple[int, int, int]]:
    """At most ``limit`` off-diagonal cells of ``confusion[actual, predicted]``, as ``(actual, predicted, count)``.

    Largest count first, ties in (actual, predicted) order; cells with no image are left out.
    """
    errors = confusion.astype(np.int64).copy()
    np.fill_diagonal(errors, 0)
    order = np.argsort(-errors, axis=None, kind="stable")[:limit]
    pairs = [(int(i // len(errors)), int(i % len(errors)), int(errors.flat[i])) for i in order]
    return [pair for pair in pairs if pair[2] > 0]


def precision_recall(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall ``(classes,)`` of each class of ``confusion[actual, predicted]``; 0 if undefined."""
    hits = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    return (np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0),
            np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0))


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def model_card(*, architecture: Mapping[str, Any], params: Mapping[str, Any], preprocessing: Mapping[str, float],
               sizes: Mapping[str, int], training: Mapping[str, Any], test_loss: float,
               confusion: np.ndarray) -> str:
    """The card as Markdown.

    Parameters
    ----------
    architecture : Mapping
        The ``lenet5`` arguments saved with the model (models/model.json).
    params : Mapping
        ``{"train.lr": 0.05, ...}``, the training params.
    preprocessing : Mapping
        ``{"mean": ..., "std": ...}`` of the training pixels (models/preprocessing.json).
    sizes : Mapping
        Images per split: ``{"train": ..., "val": ..., "test": ...}``; ``val`` may be 0.
    training : Mapping
        The train stage's metrics/train.json (kept epoch; validation figures unless ``val``
        is 0) and train_run.json (stop reason, parameters).
    test_loss : float
        Mean cross-entropy on the test split.
    confusion : (classes, classes)
        Test counts, ``confusion[actual, predicted]``.

    Returns
    -------
    str
    """
    total = int(confusion.sum())
    correct = int(np.trace(confusion))
    per_class = confusion.sum(axis=1)
    precision, recall = precision_recall(confusion)
    augment = {key.rsplit(".", 1)[1]: value for key, value in params.items() if key.startswith("train.augment.")}
    lines = [
        "# Model card: LeNet-5 on MNIST",
        "",
        "Written by `dvc repro` (stage `evaluate`); do not edit by hand.",
        "",
        "## Model",
        "",
        f"- LeNet-5 in NumPy (`nn.lenet5`): conv {_value(architecture.get('channels'))} channels (5×5), "
        f"{architecture.get('pool')} pooling, dense {_value(architecture.get('hidden'))}, "
        f"{architecture.get('activation')} activations, dropout {_value(architecture.get('dropout', 0.0))}.",
        f"- Parameters: {int(training['parameters']):,}.",
        f"- Input: one 28×28 grey image, light digit on dark ground as in MNIST, normalized with the "
        f"training pixels' mean {preprocessing['mean']:.4f} and std {preprocessing['std']:.4f} "
        "(`models/preprocessing.json`).",
        "- Output: ten probabilities, digits 0-9 (softmax of the logits).",
        "",
        "## Data",
        "",
        f"MNIST handwritten digits: {sizes['train']:,} training images, " + (
            f"{sizes['val']:,} validation images (held out from the training set, stratified by label; "
            "they chose the best epoch), " if sizes["val"] else
            "no validation split (the last epoch's weights are kept), ") +
        f"{sizes['test']:,} test images (scored once, here).",
        "",
        "## Training params",
        "",
        "| param | value |",
        "| --- | --- |",
        *(f"| `{key}` | {_value(value)} |" for key, value in sorted(params.items())),
        "",
        "## Results",
        "",
        "| split | loss | accuracy | errors |",
        "| --- | --- | --- | --- |",
        *([f"| validation (best epoch {training['best_epoch']} of {training['epochs_run']}) | "
           f"{training['val_loss']:.4f} | {_percent(training['val_accuracy'])} | "
           f"{round((1 - training['val_accuracy']) * sizes['val'])} of {sizes['val']:,} |"] if sizes["val"] else []),
        f"| test | {test_loss:.4f} | {_percent(correct / total)} | {total - correct} of {total:,} |",
        "",
        f"Training stopped: {training['stop_reason']}" + ("." if sizes["val"] else
                                                          f"; epoch {training['best_epoch']} kept."),
        "",
        "## Errors per class (test)",
        "",
        "| digit | images | errors | recall | precision |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {d} | {int(per_class[d])} | {int(per_class[d] - confusion[d, d])} | "
          f"{_percent(recall[d])} | {_percent(precision[d])} |" for d in range(len(confusion))),
        "",
        "## Most confused pairs (test)",
        "",
        *([f"- a {a} read as {p}: {n} image{'s' if n != 1 else ''}" for a, p, n in most_confused(confusion)]
          or ["- none: every test image was classified correctly"]),
        "",
        "## Not trained for",
        "",
        "- Other scripts' digits (Arabic-Indic, Devanagari, Chinese...), letters or symbols: there is "
        "no \"none of these\" output, so such an image still gets one of 0-9, often with a high probability.",
        f"- Digits that are off-centre, much larger or smaller, or rotated, unless first prepared the way "
        f"MNIST was (crop to the ink, fit in 20×20, centre by mass in 28×28). Training saw shifts up to "
        f"{_value(augment.get('max_shift', 0.0))} px, rotations up to {_value(augment.get('max_rotation', 0.0))}° "
        f"and scaling by up to {100 * augment.get('max_scale', 0.0):g}% only.",
        "- Dark ink on light paper without inverting it, photographs, colour, noise, or several digits in "
        "one image.",
        "- Its probabilities are not calibrated for such inputs: a confident answer there means nothing.",
        "",
    ]
    return "\n".join(lines)
