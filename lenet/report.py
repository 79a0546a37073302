"""``lenet report``: the Markdown a reviewer reads on a pull request, and the curves beside it.

Compares the workspace (or ``--rev``) against a base revision (default ``main``): the params
that changed, every metric with its change, the test accuracy in words, the classes whose
recall moved by more than ``--recall-threshold`` points, and the loss and accuracy curves of
both revisions on one chart (``curves.png``). Writes ``report.md`` and the chart to ``--out``
and prints the Markdown. Run it from the repository root, after ``dvc repro``.

A revision without metrics is reported as such; one whose metrics or params cannot be read
(corrupt JSON or YAML, a test accuracy that is not a number) is an error naming the
revision and the file: a broken baseline never reads as "no baseline".
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from ruamel.yaml import YAML, YAMLError

from lenet import revisions
from lenet.curves import curves_figure, parse_history
from stages.common.errors import LenetError, first_line
from stages.common.outputs import atomic_write
from stages.common.paths import CONFUSION, EVAL_METRICS, HISTORY, PARAMS, PER_CLASS, TRAIN_METRICS

CHART = "curves.png"
REPORT = "report.md"
MISSING = "—"


def check_readable(revision: str | None, name: str) -> None:
    """Raise unless every params and metrics file the report compares that ``revision`` holds can be read.

    A file it does not hold is fine: the report says so. ``name`` is how the error names the revision.

    Raises
    ------
    LenetError
        ``could not read <name>:<file>: <reason>`` for a file that is there but does not
        parse, or a ``test_accuracy`` that is not a number.
    """
    yaml = YAML(typ="safe", pure=True)  # YAML 1.2, as DVC reads params.yaml
    for path, parse in ((PARAMS, yaml.load), (EVAL_METRICS, json.loads), (TRAIN_METRICS, json.loads)):
        text = revisions.read_file(revision, path)
        if text is None:
            continue
        try:
            values = parse(text)
        except (ValueError, YAMLError) as error:
            mark = getattr(error, "problem_mark", None)  # YAML's first line says what it parsed, not what failed
            reason = f"{error.problem} (line {mark.line + 1})" if mark else first_line(error)
            raise LenetError(f"could not read {name}:{path.as_posix()}: {reason}") from None
        accuracy = values.get("test_accuracy") if isinstance(values, dict) else None
        if path == EVAL_METRICS and (isinstance(accuracy, bool) or not isinstance(accuracy, (int, float))
                                     or not math.isfinite(accuracy)):
            raise LenetError(f"could not read {name}:{path.as_posix()}: test_accuracy is {accuracy!r}, "
                             "expected a number")


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def errors(accuracy: float, images: int) -> int:
    """Misclassified test images behind an accuracy (rounded: accuracy is errors / images)."""
    return round((1 - accuracy) * images)


def accuracy_sentence(old: float | None, new: float | None, old_images: int | None, new_images: int | None,
                      base: str, rev: str) -> str:
    """The test-accuracy change in words, e.g. "Test accuracy rose from 99.40% to 99.47% (...)".

    ``None`` stands for a revision without metrics/eval.json; the sentence then says so.
    """
    if old is None and new is None:
        return f"Neither `{base}` nor `{rev}` has a test accuracy ({EVAL_METRICS} is missing in both)."
    if new is None:
        return (f"`{rev}` has no test accuracy ({EVAL_METRICS} is missing: run `dvc repro`); "
                f"`{base}` had {percent(old)}.")
    if old is None:
        return (f"Test accuracy of `{rev}`: {percent(new)} ({errors(new, new_images):,} errors in {new_images:,}). "
                f"`{base}` has no {EVAL_METRICS} to compare with.")
    points = 100 * (new - old)
    if old_images != new_images:
        detail = f"{points:+.2f} points; on {old_images:,} and {new_images:,} test images, so errors are not compared"
    else:
        fewer = errors(old, old_images) - errors(new, new_images)
        count = f"{abs(fewer):,} {'fewer' if fewer > 0 else 'more'} errors" if fewer else "as many errors"
        detail = f"{points:+.2f} points, {count} in {new_images:,}"
    if new == old:
        return f"Test accuracy did not change: {percent(new)} ({errors(new, new_images):,} errors in {new_images:,})."
    verb = "rose" if new > old else "fell"
    return f"Test accuracy {verb} from {percent(old)} to {percent(new)} ({detail})."


def cell(value) -> str:
    """A value as the tables show it: numbers to 5 significant digits, missing as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def change(entry: dict) -> str:
    old, new = entry.get("old"), entry.get("new")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    if not numeric:
        return "changed" if old != new and None not in (old, new) else ""
    return f"{new - old:+.5g}" if new != old else "0"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def params_section(diff: dict, base: str, rev: str) -> str:
    rows = [[f"`{key}`", cell(entry.get("old")), cell(entry.get("new"))]
            for path, entries in sorted(diff.items()) for key, entry in sorted(entries.items())
            if entry.get("old") != entry.get("new")]
    if not rows:
        return f"No params differ between `{base}` and `{rev}`."
    return table(["Param", base, rev], rows)


def metrics_section(diff: dict, base: str, rev: str) -> str:
    """Every metric but the per-class ones (those have their own section), with its change."""
    rows = [[path, key, cell(entry.get("old")), cell(entry.get("new")), change(entry)]
            for path, entries in sorted(diff.items()) for key, entry in sorted(entries.items())
            if not key.startswith("per_class.")]
    if not rows:
        return f"No metrics in `{base}` or `{rev}`."
    return table(["Path", "Metric", base, rev, "Change"], rows)


def recall_changes(eval_diff: dict, threshold: float) -> list[tuple[str, float, float]]:
    """(class, old, new) for each class whose recall moved by more than ``threshold`` points, largest first."""
    moved = []
    for key, entry in eval_diff.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "per_class" and parts[2] == "recall":
            old, new = entry.get("old"), entry.get("new")
            # rounded so that a change of exactly the threshold is not above it by float noise
            if old is not None and new is not None and round(abs(100 * (new - old)), 9) > threshold:
                moved.append((parts[1], old, new))
    return sorted(moved, key=lambda item: (-abs(item[2] - item[1]), item[0]))


def recall_section(eval_diff: dict, threshold: float, base: str, rev: str) -> str:
    if not any(k.startswith("per_class.") and None not in (e.get("old"), e.get("new")) for k, e in eval_diff.items()):
        return f"Not compared: `{base}` or `{rev}` has no {PER_CLASS}."
    moved = recall_changes(eval_diff, threshold)
    if not moved:
        return f"No class's recall changed by more than {threshold:g} points."
    rows = [[cls, percent(old), percent(new), f"{100 * (new - old):+.2f}"] for cls, old, new in moved]
    return (f"Classes whose recall changed by more than {threshold:g} points:\n\n"
            + table(["Class", base, rev, "Change (points)"], rows))


def chart_section(drawn: list[str], missing: list[str], chart_url: str | None) -> str:
    link = f"[{CHART}]({chart_url})" if chart_url else f"`{CHART}` beside this report"
    lines = [f"Loss and accuracy per epoch of {' and '.join(f'`{name}`' for name in drawn)}: {link}."] if drawn else []
    lines += [f"`{name}` has no {HISTORY}: no curves for it." for name in missing]
    return "\n\n".join(lines)


def scores_diff(base: tuple[str, str], rev: tuple[str, str | None]) -> dict:
    """The test set's size and each digit's recall at both revisions, as DVC's diffs give metrics.

    ``{"test_images": {"old": 10000, "new": 10000}, "per_class.3.recall": {"old": ..., "new": ...}}``,
    from metrics/confusion.csv and metrics/per_class.csv (plots, not metrics: see dvc.yaml).
    ``base`` and ``rev`` are ``(name, commit)``; a commit of None is the workspace.

    Raises
    ------
    LenetError
        ``could not read <name>:<file>: <reason>`` for a file that is there but malformed.
    """
    sides = {}
    for side, (name, revision) in (("old", base), ("new", rev)):
        found = {}
        for path in (CONFUSION, PER_CLASS):
            text = revisions.read_file(revision, path)
            if text is None:
                continue
            try:
                rows = list(csv.DictReader(io.StringIO(text)))
                if path == CONFUSION:
                    found["test_images"] = sum(int(row["count"]) for row in rows)
                else:
                    found |= {f"per_class.{int(row['digit'])}.recall": float(row["recall"]) for row in rows}
            except (KeyError, TypeError, ValueError) as error:
                raise LenetError(f"could not read {name}:{path.as_posix()}: {first_line(error)!s}, "
                                 "expected the evaluate stage's columns") from None
        sides[side] = found
    return {key: {"old": sides["old"].get(key), "new": sides["new"].get(key)}
            for key in dict.fromkeys([*sides["old"], *sides["new"]])}


def build_report(base: str, rev: str, params: dict, metrics: dict, threshold: float,
                 drawn: list[str], missing_history: list[str], chart_url: str | None,
                 scores: dict | None = None) -> str:
    """The whole Markdown report from the two DVC diffs (``--all --json`` form) and the chart's status.

    ``scores`` (:func:`scores_diff`) adds the test set's size and the per-digit recalls.
    """
    eval_diff = metrics.get(EVAL_METRICS.as_posix(), {}) | (scores or {})
    accuracy, images = eval_diff.get("test_accuracy", {}), eval_diff.get("test_images", {})
    sections = [
        f"## `{rev}` against `{base}`",
        accuracy_sentence(accuracy.get("old"), accuracy.get("new"), images.get("old"), images.get("new"), base, rev),
        "### Params", params_section(params, base, rev),
        "### Metrics", metrics_section(metrics, base, rev),
        "### Per-class recall", recall_section(eval_diff, threshold, base, rev),
        "### Curves", chart_section(drawn, missing_history, chart_url),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def main(
    base: Annotated[str, typer.Option(help="Git revision to compare against.")] = "main",
    rev: Annotated[Optional[str], typer.Option(help="Git revision to review (default: the workspace).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.md and curves.png (CI uploads it).")] = Path("report"),
    recall_threshold: Annotated[float, typer.Option(
        min=0, help="List classes whose recall changed by more than this many percentage points "
                    "(0.15: more than one image of any MNIST test class).")] = 0.15,
    chart_url: Annotated[Optional[str], typer.Option(
        help="Where readers find curves.png (e.g. the CI run's artifacts); default: beside the report.")] = None,
) -> None:
    """Write the review report of --rev (or the workspace) against --base to --out and print it."""
    if not Path("dvc.yaml").exists():
        raise LenetError("dvc.yaml: not found; run `lenet report` from the repository root")
    base_name, rev_name = revisions.label(base), revisions.label(rev)
    base_commit = revisions.resolve(base, "--base")
    rev_commit = revisions.WORKSPACE if rev is None else revisions.resolve(rev, "--rev")
    for name, revision in ((base_name, base_commit), (rev_name, rev_commit)):
        check_readable(revision, name)
    params = revisions.dvc_diff("params", base_commit, rev_commit)
    metrics = revisions.dvc_diff("metrics", base_commit, rev_commit)

    histories, missing = {}, []
    for name, revision in ((base_name, base_commit), (rev_name, rev_commit)):
        text = revisions.read_file(revision, HISTORY)
        if text is None:
            missing.append(name)
        else:
            histories[name] = parse_history(text, f"{name}:{HISTORY}")

    markdown = build_report(base_name, rev_name, params, metrics, recall_threshold,
                            list(histories), missing, chart_url,
                            scores_diff((base_name, base_commit), (rev_name, rev_commit)))
    out.mkdir(parents=True, exist_ok=True)
    if histories:
        with atomic_write(out / CHART) as handle:
            curves_figure(histories).savefig(handle, format="png", dpi=90, bbox_inches="tight",
                                             metadata={"Software": None})
    else:
        (out / CHART).unlink(missing_ok=True)  # never leave an older run's chart beside this report
    with atomic_write(out / REPORT, "w") as handle:
        handle.write(markdown)
    print(markdown, end="")
