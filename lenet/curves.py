"""Per-epoch curves from metrics/history.csv: two revisions' loss and accuracy, or a study's runs.

Any number of runs fit on a chart: up to ten take matplotlib's ten categorical colours
(``tab10``), more are spread evenly along a perceptually uniform colour map.
"""

from __future__ import annotations

import csv
import io
import math

import matplotlib
from matplotlib.figure import Figure  # the object API: no pyplot, no backend, no global state
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from stages.common.errors import LenetError

REQUIRED = ("epoch", "train_loss", "train_accuracy")
VALIDATION = ("val_loss", "val_accuracy")  # empty cells (or no column) when a run had no validation split
LINES = {"train": ":", "val": "-"}  # one line style per split, one colour per revision


def parse_history(text: str, source: str) -> dict[str, list[float]]:
    """The columns the charts need from a history CSV, as lists of floats.

    Parameters
    ----------
    text : str
        The CSV, with a header row (other columns are ignored).
    source : str
        Where it came from, e.g. ``main:metrics/history.csv``, for the error message.

    Returns
    -------
    dict of str to list of float
        One list per name in :data:`REQUIRED`, and per name in :data:`VALIDATION` when the
        CSV has values for both (a run without validation has none), one value per epoch.
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    header = rows[0] if rows else {}
    validation = [c for c in VALIDATION if c in header and any(row[c] for row in rows)]
    missing = [c for c in REQUIRED if c not in header] + [c for c in VALIDATION if validation and c not in header]
    if not rows or missing:
        raise LenetError(f"{source}: expected a header with {', '.join(REQUIRED)} (and {', '.join(VALIDATION)} "
                         "after validation) and at least one row"
                         + (f" (missing {', '.join(missing)})" if rows and missing else ""))
    try:
        return {c: [float(row[c]) for row in rows] for c in (*REQUIRED, *validation)}
    except (TypeError, ValueError) as error:
        raise LenetError(f"{source}: not numeric ({error})") from None


def colours(count: int) -> list:
    """``count`` distinguishable colours: ``tab10``'s, or ``viridis`` sampled evenly beyond ten."""
    if count <= 10:
        return [matplotlib.colormaps["tab10"](index) for index in range(count)]
    return list(matplotlib.colormaps["viridis"].resampled(count)(range(count)))


def _integer_epochs(*axes_list) -> None:
    for axes in axes_list:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        axes.grid(alpha=0.3)


def curves_figure(histories: dict[str, dict[str, list[float]]]) -> Figure:
    """Loss (left) and accuracy (right) per epoch: each revision in its colour, val solid, train dotted.

    Parameters
    ----------
    histories : dict of str to dict
        Revision label (e.g. ``main``, ``workspace``) to its :func:`parse_history` columns,
        in the order to draw them (base first). One revision alone is drawn as well.

    Returns
    -------
    matplotlib.figure.Figure
        Legend labels read ``<revision> <split>``, e.g. ``main val``.
    """
    figure = Figure(figsize=(11, 4))
    loss, accuracy = figure.subplots(1, 2)
    for colour, (name, history) in zip(colours(len(histories)), histories.items()):
        for split, style in LINES.items():
            if f"{split}_loss" not in history:
                continue
            for axes, metric in ((loss, "loss"), (accuracy, "accuracy")):
                axes.plot(history["epoch"], history[f"{split}_{metric}"], style, color=colour,
                          marker="o", markersize=3, label=f"{name} {split}")
    loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    loss.set_yscale("log")
    accuracy.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    _integer_epochs(loss, accuracy)
    for axes in (loss, accuracy):
        axes.legend()
    figure.suptitle(" vs ".join(histories))
    return figure


def study_figure(title: str, histories: dict[str, dict[str, list[float]]]) -> Figure:
    """Training accuracy per epoch, one curve per run, as the original tutorial drew its studies.

    Runs with a validation split add their validation accuracy, dashed, in the same colour.
    The accuracy axis is a logit scale (10%, 50%, 90%, 99%, 99.9% equally spaced), so runs
    that differ in the last tenth of a point stay apart beside a first epoch far below them.
    The legend sits under the chart, one line per curve.

    Parameters
    ----------
    title : str
        The study, e.g. ``Learning rate (batch 32, 10 epochs)``.
    histories : dict of str to dict
        Curve label (e.g. ``LR=0.001, BS=32, Epochs=10``) to :func:`parse_history` columns,
        in legend order; any number of runs.

    Returns
    -------
    matplotlib.figure.Figure
        One axes; legend labels are the keys of ``histories`` (``<label> (validation)`` for
        the dashed curves).
    """
    curves = sum(1 + ("val_accuracy" in history) for history in histories.values())
    figure = Figure(figsize=(8, 4.5 + 0.2 * curves), layout="constrained")
    axes = figure.subplots()
    values = []
    for colour, (label, history) in zip(colours(len(histories)), histories.items()):
        axes.plot(history["epoch"], history["train_accuracy"], "-", color=colour, label=label)
        values += history["train_accuracy"]
        if "val_accuracy" in history:
            axes.plot(history["epoch"], history["val_accuracy"], "--", color=colour, label=f"{label} (validation)")
            values += history["val_accuracy"]
    axes.set_yscale("logit", nonpositive="clip")
    inside = [value for value in values if 0 < value < 1] or [0.5]
    low, high = (math.log(v / (1 - v)) for v in (min(inside), max(inside)))
    margin = 0.05 * (high - low) + 0.05
    axes.set_ylim(*(1 / (1 + math.exp(-edge)) for edge in (low - margin, high + margin)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{100 * value:g}%"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set(title=title, xlabel="epoch", ylabel="training accuracy (logit scale)")
    _integer_epochs(axes)
    figure.legend(loc="outside lower center", fontsize="small")
    return figure
