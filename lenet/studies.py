"""``lenet studies``: the report's studies, its ideas and an ablation, as queued DVC experiments.

Each run is one ``dvc exp run --queue -S +preset=tutorial -S ... -n NAME`` (the rows are in
``lenet/study_plans.py``). Runs shared by two studies are queued once, runs already done
are reused, and the queue runs one at a time (``dvc queue start -j 1``; each run uses
``train.workers`` cores). Then, per study, a Markdown table beside the report's figures and
a PNG of training accuracy per epoch, one curve per run.

What a run is comes from Hydra, as DVC composes it: ``preset/tutorial.yaml`` over
``params.yaml`` (``[hydra]`` in ``.dvc/config``), then the row's keys. That names the run
and checks that an experiment of that name really has those params.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from lenet import exp_queue
from lenet.curves import parse_history, study_figure
from lenet.study_plans import PRESET, STUDIES, STUDY_KEYS, Row, Study
from stages.common.errors import LenetError, first_line
from stages.common.outputs import atomic_write

HYDRA_CONFIG_DIR, HYDRA_CONFIG_NAME = ".", "params"  # as .dvc/config's [hydra] section sets them
SHAPING = ("normalize.", "train.")  # the params a run's results depend on (evaluate's batch size does not)


@dataclass(frozen=True)
class Run:
    """A row made concrete: its experiment name, ``-S`` overrides and composed params."""

    name: str
    label: str
    overrides: tuple[str, ...]
    params: dict  # params.yaml as the run will see it

    def queue_args(self) -> list[str]:
        args = ["dvc", "exp", "run", "--queue"]
        for override in self.overrides:
            args += ["-S", override]
        return [*args, "-n", self.name]


def compose(overrides: list[str]) -> dict:
    """params.yaml as Hydra composes it with ``overrides``, the way ``dvc exp run -S`` writes it."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(Path(HYDRA_CONFIG_DIR).resolve()), version_base=None):
            return OmegaConf.to_container(hydra_compose(config_name=HYDRA_CONFIG_NAME, overrides=overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise LenetError(f"-S {' -S '.join(overrides)}: {first_line(error)}") from None


def dotted(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (lists are values)."""
    flat = {}
    for key, value in tree.items():
        flat.update(dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def override_value(value: Any) -> str:
    """A params.yaml value in Hydra's override syntax: ``[8,24]``, ``true``, ``0.05``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(map(override_value, value)) + "]"
    return str(value)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["train.workers=1", ...]`` -> ``{"train.workers": "1"}`` (values kept as Hydra reads them)."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LenetError(f"--set {item!r}: expected KEY=VALUE, e.g. train.workers=1")
        extra[key.strip()] = value.strip()
    return extra


def make_run(row: Row, extra: dict[str, str], recipe: dict[str, Any], tutorial: dict[str, Any]) -> Run:
    """The run of ``row`` with ``extra`` on top.

    ``recipe`` and ``tutorial`` are params.yaml (dotted) alone and with the preset.
    """
    base = tutorial if row.preset else recipe
    # The keys the row takes from the recipe, where the preset set them otherwise.
    defaults = {key: override_value(recipe[key]) for key in row.defaults if recipe[key] != base[key]}
    sets = {**dict(row.sets), **defaults, **extra}
    overrides = ([PRESET] if row.preset else []) + [f"{key}={value}" for key, value in sets.items()]
    params = compose(overrides)
    train = params["train"]
    return Run(row.name.format(**train), row.label.format(**train), tuple(overrides), params)


def plan(studies: list[Study], extra: dict[str, str]) -> tuple[dict[str, list[Run]], list[Run]]:
    """Each study's runs, and the distinct runs of them all in order (a name is one run)."""
    recipe, tutorial = dotted(compose([])), dotted(compose([PRESET]))
    by_study: dict[str, list[Run]] = {}
    distinct: dict[str, Run] = {}
    for study in studies:
        by_study[study.key] = []
        for row in study.rows:
            run = make_run(row, extra, recipe, tutorial)
            if run.name in distinct and distinct[run.name].params != run.params:
                raise LenetError(f"two rows name different runs {run.name}; give one of them another name")
            distinct.setdefault(run.name, run)
            by_study[study.key].append(run)
    return by_study, list(distinct.values())


def mismatch(experiment: exp_queue.Experiment, run: Run) -> str | None:
    """Why ``experiment`` is not ``run``: the first ``normalize`` or ``train`` param that differs; or None."""
    expected, actual = dotted(run.params), dotted(experiment.params)
    for key in sorted(expected):
        if key.startswith(SHAPING) and actual.get(key) != expected[key]:
            return f"experiment {run.name} has {key}={actual.get(key)!r}, not {expected[key]!r}"
    return None


@dataclass(frozen=True)
class Result:
    """What a finished run gives a table and a figure."""

    accuracy: float | None
    kept: str            # "49 of 50"
    epoch_seconds: list[float]
    memory_mib: int | None
    history: dict | None


def result(experiment: exp_queue.Experiment) -> Result:
    scores = experiment.metrics.get("metrics/eval.json", {})
    train = experiment.metrics.get("metrics/train.json", {})
    console = exp_queue.log(experiment.name)
    try:
        curves = parse_history(exp_queue.history(experiment), f"{experiment.name}:metrics/history.csv")
    except Exception as error:  # noqa: BLE001 - a table without its curve is still worth printing
        print(f"warning: no curve for {experiment.name}: {first_line(error)}", file=sys.stderr)
        curves = None
    return Result(scores.get("test_accuracy"), f"{train.get('best_epoch', '?')} of {train.get('epochs_run', '?')}",
                  exp_queue.epoch_seconds(console), exp_queue.peak_memory_mib(console), curves)


def _percent(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "—"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def table(study: Study, runs: list[Run], results: dict[str, Result]) -> str:
    """The study's Markdown table: the report's figure beside ours, then its training time."""
    header = "| setting | report | ours: test accuracy | epoch kept | time per epoch |" + (
        " peak memory |" if study.memory else "")
    lines = [f"**{study.title}**", "", header, "|" + "---|" * (header.count("|") - 1)]
    total, counted = 0.0, 0
    for row, run in zip(study.rows, runs):
        got = results.get(run.name)
        if got is None:
            cells = ["not run", "—", "—"] + (["—"] if study.memory else [])
        else:
            seconds = got.epoch_seconds
            cells = [_percent(got.accuracy), got.kept, f"{sum(seconds) / len(seconds):.1f} s" if seconds else "—"]
            if study.memory:
                cells.append(f"{got.memory_mib} MiB" if got.memory_mib is not None else "—")
            total, counted = total + sum(seconds), counted + bool(seconds)
        lines.append(f"| {run.label} | {row.report or '—'} | " + " | ".join(cells) + " |")
    lines += ["", f"Training time: {_minutes(total)} for {counted} run{'s' * (counted != 1)} "
                  "(their epochs added up, from their logs)."]
    return "\n".join(lines) + "\n\n"


def write_figure(study: Study, runs: list[Run], results: dict[str, Result], out: Path) -> Path | None:
    """``out/<study>.png``: training accuracy per epoch of the study's finished runs."""
    curves = {run.label: results[run.name].history for run in runs
              if run.name in results and results[run.name].history}
    if not curves:
        return None
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{study.key}.png"
    with atomic_write(path) as handle:
        study_figure(study.title, curves).savefig(handle, format="png", dpi=80, metadata={"Software": None})
    return path


def queue_and_run(runs: list[Run], found: dict[str, exp_queue.Experiment], poll: float, baseline: str) -> bool:
    """Queue the runs not done, queued or running; run the queue one at a time; wait. False if any failed."""
    for run in runs:
        if run.name not in found or found[run.name].state == exp_queue.FAILED:
            print(shlex.join(run.queue_args()), file=sys.stderr, flush=True)
            exp_queue.dvc(*run.queue_args()[1:])
    waiting = [run.name for run in runs if run.name not in found or found[run.name].state != exp_queue.DONE]
    if not waiting:
        return True
    started = time.perf_counter()
    exp_queue.start_queue(jobs=1)
    states = exp_queue.wait_for(waiting, poll, baseline)
    print(f"{len(waiting)} runs finished in {_minutes(time.perf_counter() - started)}", file=sys.stderr)
    failed = [name for name, state in states.items() if state != exp_queue.DONE]
    for name in failed:
        tail = "\n".join((exp_queue.log(name) or "(no log)").rstrip().splitlines()[-25:])
        print(f"--- {name}: {states[name]}; the end of `dvc queue logs {name}`:\n{tail}", file=sys.stderr)
    return not failed


def main(
    only: Annotated[list[str], typer.Option(help=f"Only this study: {' | '.join(STUDY_KEYS)} (repeatable).")] = [],
    set_: Annotated[list[str], typer.Option("--set", "-S", help="KEY=VALUE override for every run, after the "
                                            "row's own (repeatable), e.g. -S train.workers=1.")] = [],
    dry_run: Annotated[bool, typer.Option(help="Print the dvc exp run lines; queue nothing.")] = False,
    table_only: Annotated[bool, typer.Option(help="Only the tables and figures, from experiments already run.")] = False,
    out: Annotated[Path, typer.Option(help="Folder for the figures, one <study>.png each.")] = Path("studies"),
    rev: Annotated[str, typer.Option(help="The baseline commit of the experiments to read.")] = "HEAD",
    num: Annotated[int, typer.Option("--num", "-n", min=1, help="Also read the experiments of the N-1 commits "
                                     "before --rev (as dvc exp show -n).")] = 1,
    poll: Annotated[float, typer.Option(help="Seconds between looks at the queue (each costs a dvc start-up).",
                                        min=0.1)] = 60.0,
) -> None:
    """Queue, run, tabulate and draw the report's studies, its ideas and the ablation.

    Run it from the repository root. A queued run takes the tracked files as they are when it is queued; untracked files stay out. Runs already done are reused.

    Prints one Markdown table per study (the report's figure beside ours, the epoch kept, the mean time per epoch and, for batch sizes, the peak memory, from `dvc queue logs`) and writes one PNG per study to --out.
    """
    unknown = sorted(set(only) - set(STUDY_KEYS))
    if unknown:
        raise LenetError(f"--only {unknown[0]}: expected one of {', '.join(STUDY_KEYS)}")
    studies = [study for study in STUDIES if not only or study.key in only]
    by_study, runs = plan(studies, parse_overrides(set_))
    if dry_run:
        for run in runs:
            print(shlex.join(run.queue_args()))
        return
    if rev != "HEAD" and not table_only:
        raise LenetError(f"--rev {rev}: only with --table-only (runs are queued on HEAD)")
    baseline = exp_queue.commit_of(rev)  # HEAD may move while the runs run (a commit meanwhile)
    found = exp_queue.experiments(baseline, num)
    done = {run.name for run in runs if run.name in found and found[run.name].state == exp_queue.DONE}
    if table_only and not done:
        raise LenetError(f"none of the {len(runs)} runs has finished among the experiments of {rev} "
                         f"(-n {num}); `lenet studies` queues and runs them")
    for run in runs:
        problem = mismatch(found[run.name], run) if run.name in done else None
        if problem:
            raise LenetError(f"{problem}; remove it (dvc exp remove {run.name}) or pass other -S values")
    ok = table_only or queue_and_run(runs, found, poll, baseline)
    if not table_only:
        found = exp_queue.experiments(baseline, num)
    results = {run.name: result(found[run.name]) for run in runs
               if run.name in found and found[run.name].state == exp_queue.DONE}
    for study in studies:
        print(table(study, by_study[study.key], results), end="")
        figure = write_figure(study, by_study[study.key], results, out)
        if figure:
            print(f"wrote {figure}", file=sys.stderr)
    if not ok:
        raise LenetError("some runs failed (their logs are above; dvc queue logs NAME shows them whole)")
    missing = [run.name for run in runs if run.name not in results]
    if missing:
        raise LenetError(f"{len(missing)} of {len(runs)} runs not done: {', '.join(missing)}")
