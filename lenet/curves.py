"""Loss and accuracy curves of two revisions on one chart, from their metrics/history.csv."""

from __future__ import annotations

import csv
import io

from matplotlib.figure import Figure  # the object API: no pyplot, no backend, no global state
from matplotlib.ticker import MaxNLocator

from stages.common.errors import LenetError

COLUMNS = ("epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy")
LINES = {"train": ":", "val": "-"}  # one line style per split, one colour per revision


def parse_history(text: str, source: str) -> dict[str, list[float]]:
    """The columns the chart needs from a history CSV, as lists of floats.

    Parameters
    ----------
    text : str
        The CSV, with a header row (other columns are ignored).
    source : str
        Where it came from, e.g. ``main:metrics/history.csv``, for the error message.

    Returns
    -------
    dict of str to list of float
        One list per name in :data:`COLUMNS`, one value per epoch.
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    missing = [c for c in COLUMNS if c not in (rows[0] if rows else {})]
    if not rows or missing:
        raise LenetError(f"{source}: expected a header with {', '.join(COLUMNS)} and at least one row"
                         + (f" (missing {', '.join(missing)})" if rows and missing else ""))
    try:
        return {c: [float(row[c]) for row in rows] for c in COLUMNS}
    except (TypeError, ValueError) as error:
        raise LenetError(f"{source}: not numeric ({error})") from None


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
    for colour, (name, history) in zip(("tab:blue", "tab:orange", "tab:green"), histories.items()):
        for split, style in LINES.items():
            for axes, metric in ((loss, "loss"), (accuracy, "accuracy")):
                axes.plot(history["epoch"], history[f"{split}_{metric}"], style, color=colour,
                          marker="o", markersize=3, label=f"{name} {split}")
    loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    loss.set_yscale("log")
    accuracy.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    for axes in (loss, accuracy):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(" vs ".join(histories))
    return figure
