"""``lenet studies``: the original tutorial's three studies, queued, run and tabulated.

The tutorial trained LeNet-5 (6 and 16 feature maps, sigmoid, average pooling, N(0, 1)
weights) with plain SGD on the batch-*summed* loss, and compared learning rates, batch
sizes and epochs. Each run here is one ``dvc exp run --queue`` with that configuration
(``train.loss_reduction=sum``, so its learning rates are written as it wrote them). Runs
shared by two studies are queued once (7 runs of 10 epochs and 2 of 50), run one at a
time (``dvc queue start -j 1``; each uses ``train.workers`` cores), and reported as one
Markdown table per study beside the tutorial's own figures.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from typing import Annotated

import typer

from lenet import exp_queue
from stages.common.errors import LenetError

# The tutorial's setup, as -S overrides (the study's lr, batch size and epochs come on top).
TUTORIAL = {
    "train.activation": "sigmoid",
    "train.pool": "avg",
    "train.init": "randn",
    "train.channels": "[6,16]",
    "train.hidden": "[120,84]",
    "train.dropout": "0.0",
    "train.optimizer": "sgd",
    "train.loss_reduction": "sum",
    "train.momentum": "0.0",
    "train.nesterov": "false",
    "train.weight_decay": "0.0",
    "train.schedule": "constant",
    "train.warmup_epochs": "0",
    "train.early_stopping.patience": "0",
    "train.augment.max_shift": "0",
    "train.augment.max_rotation": "0",
    "train.augment.max_scale": "0",
    "train.augment.elastic_alpha": "0",
}
LR, BATCH, EPOCHS = "train.lr", "train.batch_size", "train.epochs"
# Every run side by side: test accuracy first (all other metrics, per-class figures, deps and
# queue columns dropped; --drop matches column names from their start), then the params that
# differ, best first. Add --md for Markdown, -A for the experiments of every commit.
EXP_SHOW = ("dvc exp show --hide-workspace --hide-failed --only-changed "
            "--drop 'Created|State|Executor|per_class|parameters|stop_reason|test_images|best_epoch|"
            "epochs_run|.*_loss|train_accuracy|val_accuracy|.*/|nn|models' "
            "--sort-by test_accuracy --sort-order desc")


@dataclass(frozen=True)
class Run:
    """One training run of a study: learning rate (of the summed loss), batch size, epochs."""

    lr: float
    batch_size: int
    epochs: int

    @property
    def name(self) -> str:
        return f"tut-lr{self.lr:g}-b{self.batch_size}-e{self.epochs}"

    def with_overrides(self, extra: dict[str, str]) -> "Run":
        """This run as ``extra`` overrides change it (they may set lr, batch size, epochs)."""
        return Run(float(extra.get(LR, self.lr)), int(extra.get(BATCH, self.batch_size)),
                   int(extra.get(EPOCHS, self.epochs)))

    def overrides(self, extra: dict[str, str]) -> dict[str, str]:
        return {**TUTORIAL, LR: f"{self.lr:g}", BATCH: str(self.batch_size), EPOCHS: str(self.epochs), **extra}


@dataclass(frozen=True)
class Row:
    run: Run
    tutorial: str  # the tutorial's figure for this run


@dataclass(frozen=True)
class Study:
    key: str
    title: str
    rows: tuple[Row, ...]


STUDIES = (
    Study("lr", "Learning rate (batch 32, 10 epochs)", (
        Row(Run(0.001, 32, 10), "95.58%"),
        Row(Run(0.0015, 32, 10), "95.83%"),
        Row(Run(0.002, 32, 10), "96.15%"),
        Row(Run(0.005, 32, 10), "96.93%"),
    )),
    Study("batch", "Batch size (lr 0.0015, 10 epochs)", (
        Row(Run(0.0015, 32, 10), "95.83%, 13 min/epoch"),
        Row(Run(0.0015, 64, 10), "95.72%, 9 min/epoch"),
        Row(Run(0.0015, 128, 10), "95.45%, 6 min/epoch"),
        Row(Run(0.0015, 256, 10), "94.84%, 5 min/epoch"),
    )),
    Study("epochs", "Epochs", (
        Row(Run(0.002, 32, 10), "96.15%"),
        Row(Run(0.002, 32, 50), "98.13%"),
        Row(Run(0.0015, 64, 10), "95.72%"),
        Row(Run(0.0015, 64, 50), "98.17%"),
    )),
)
STUDY_KEYS = tuple(study.key for study in STUDIES)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["train.workers=1", ...]`` -> ``{"train.workers": "1"}`` (values kept as DVC reads them)."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LenetError(f"--set {item!r}: expected KEY=VALUE, e.g. train.workers=1")
        extra[key.strip()] = value.strip()
    for key, kind, expected in ((LR, float, "a number"), (BATCH, int, "an integer"), (EPOCHS, int, "an integer")):
        if key in extra:
            try:
                kind(extra[key])
            except ValueError:
                raise LenetError(f"--set {key}={extra[key]}: expected {expected}") from None
    return extra


def plan(only: list[str], extra: dict[str, str]) -> tuple[list[Study], list[Run]]:
    """The studies to show and their distinct runs, in order, after ``extra`` overrides."""
    studies = [study for study in STUDIES if not only or study.key in only]
    runs: list[Run] = []
    for study in studies:
        for row in study.rows:
            run = row.run.with_overrides(extra)
            if run not in runs:
                runs.append(run)
    return studies, runs


def exp_run_args(run: Run, extra: dict[str, str]) -> list[str]:
    """The ``dvc exp run --queue`` command line that queues ``run``."""
    args = ["dvc", "exp", "run", "--queue", "-n", run.name]
    for key, value in run.overrides(extra).items():
        args += ["-S", f"{key}={value}"]
    return args


def _percent(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "—"


def tables(studies: list[Study], extra: dict[str, str], found: dict[str, exp_queue.Experiment],
           seconds: dict[str, float | None]) -> str:
    """One Markdown table per study: the tutorial's figure beside ours, by run."""
    parts = []
    for study in studies:
        lines = [f"**{study.title}**", "",
                 "| lr (summed loss) | batch | epochs | tutorial | ours: test accuracy | best epoch | time per epoch |",
                 "|---|---|---|---|---|---|---|"]
        for row in study.rows:
            run = row.run.with_overrides(extra)
            experiment = found.get(run.name)
            if experiment is None:
                accuracy, best = "not run", "—"
            else:
                accuracy = _percent(experiment.metrics.get("metrics/eval.json", {}).get("test_accuracy"))
                train = experiment.metrics.get("metrics/train.json", {})
                best = f"{train.get('best_epoch', '?')} of {train.get('epochs_run', '?')}"
            spent = seconds.get(run.name)
            lines.append(f"| {run.lr:g} | {run.batch_size} | {run.epochs} | {row.tutorial} | {accuracy} | {best} | "
                         + (f"{spent:.1f} s" if spent is not None else "—") + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def check_params(experiment: exp_queue.Experiment, run: Run, extra: dict[str, str]) -> str | None:
    """Why ``experiment`` is not ``run`` (another lr, batch size, epochs or reduction), or None."""
    train = experiment.params.get("train", {})
    actual = (train.get("lr"), train.get("batch_size"), train.get("epochs"), train.get("loss_reduction"))
    expected = (run.lr, run.batch_size, run.epochs, run.overrides(extra)["train.loss_reduction"])
    if actual != expected:
        return f"experiment {run.name} has lr, batch_size, epochs, loss_reduction = {actual}, not {expected}"
    return None


def report(studies: list[Study], runs: list[Run], extra: dict[str, str]) -> bool:
    """Print the tables of the finished runs; False if any is missing or mismatched."""
    found = exp_queue.experiments(all_commits=True)
    complete = True
    for run in runs:
        problem = check_params(found[run.name], run, extra) if run.name in found else f"experiment {run.name} not found"
        if problem:
            print(f"warning: {problem}", file=sys.stderr)
            found.pop(run.name, None)
            complete = False
    seconds = {run.name: exp_queue.epoch_seconds(run.name) for run in runs if run.name in found}
    print(tables(studies, extra, found, seconds), end="")
    print(f"All runs side by side: {EXP_SHOW}", file=sys.stderr)
    return complete


def queue_and_run(runs: list[Run], extra: dict[str, str], poll: float) -> bool:
    """Queue every run, run the queue one at a time, wait; False if any run failed."""
    existing = exp_queue.experiment_names() & {run.name for run in runs}
    if existing:
        names = " ".join(sorted(existing))
        raise LenetError(f"experiments already exist: {names}; print their tables with --table-only, "
                         f"or remove them first (dvc exp remove {names})")
    old_tasks = set(exp_queue.queue_tasks())
    for run in runs:
        args = exp_run_args(run, extra)
        print(shlex.join(args), file=sys.stderr, flush=True)
        exp_queue.dvc(*args[1:])
    started = time.perf_counter()
    exp_queue.start_queue(jobs=1)
    statuses = exp_queue.wait_for([run.name for run in runs], old_tasks, poll)
    minutes = (time.perf_counter() - started) / 60
    print(f"{len(runs)} runs finished in {minutes:.1f} min", file=sys.stderr)
    failed = [name for name, status in statuses.items() if status != "Success"]
    for name in failed:
        print(f"--- {name}: {statuses[name]}; the end of `dvc queue logs {name}`:\n{exp_queue.log_tail(name)}",
              file=sys.stderr)
    return not failed


def main(
    only: Annotated[list[str], typer.Option(help=f"Only this study: {' | '.join(STUDY_KEYS)} (repeatable).")] = [],
    set_: Annotated[list[str], typer.Option("--set", "-S", help="KEY=VALUE override for every run, after the "
                                            "tutorial's (repeatable), e.g. -S train.workers=1.")] = [],
    dry_run: Annotated[bool, typer.Option(help="Print the dvc exp run lines; queue nothing.")] = False,
    table_only: Annotated[bool, typer.Option(help="Only print the tables, from experiments already run.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between looks at the queue (each costs a dvc start-up).", min=0.1)] = 60.0,
) -> None:
    """Queue, run and tabulate the tutorial's learning-rate, batch-size and epoch studies.

    Run it from the repository root after committing: a queued run sees only what git and DVC track.

    Prints one Markdown table per study: the tutorial's test accuracy beside ours, our best epoch (by validation loss) and our mean time per epoch (training + validation, from `dvc queue logs`).
    """
    unknown = sorted(set(only) - set(STUDY_KEYS))
    if unknown:
        raise LenetError(f"--only {unknown[0]}: expected one of {', '.join(STUDY_KEYS)}")
    extra = parse_overrides(set_)
    studies, runs = plan(only, extra)
    if dry_run:
        for run in runs:
            print(shlex.join(exp_run_args(run, extra)))
        return
    ok = table_only or queue_and_run(runs, extra, poll)
    complete = report(studies, runs, extra)
    if not ok:
        raise LenetError("some runs failed (their logs are above; dvc queue logs NAME shows them whole)")
    if not complete:
        raise LenetError("some runs are missing from dvc exp show (see the warnings above)")
