"""``lenet studies``: the tutorial's studies as queued DVC experiments, and their tables.

The planning tests run in a second; the end-to-end test queues two one-epoch runs on a
small MNIST subset in a scratch git + DVC copy of the repository, runs the queue and
checks the printed table against ``dvc exp show``.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lenet import studies
from lenet.exp_queue import Experiment
from tests.mnist_mirror import MIRROR, needs_mirror
from tests.scratch_project import commit_all, copy_project, init_repo

ROOT = Path(__file__).resolve().parents[1]


def lenet(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MNIST_MIRROR=str(MIRROR),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return subprocess.run([sys.executable, "-m", "lenet.cli", "studies", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def dry_run(*args: str) -> list[dict[str, str]]:
    """The -S overrides of each `dvc exp run` line printed by --dry-run, with its name."""
    result = lenet(ROOT, "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    runs = []
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        assert words[:6] == ["dvc", "exp", "run", "--queue", "-n", words[5]]
        sets = dict(words[i + 1].split("=", 1) for i in range(6, len(words), 2) if words[i] == "-S")
        assert len(sets) == (len(words) - 6) // 2  # every other word is -S, each key once
        runs.append({"name": words[5], **sets})
    return runs


def test_dry_run_queues_the_nine_distinct_runs_of_the_three_studies():
    runs = dry_run()
    got = {(r["name"], r["train.lr"], r["train.batch_size"], r["train.epochs"]) for r in runs}
    assert len(runs) == len(got) == 9
    assert got == {
        ("tut-lr0.001-b32-e10", "0.001", "32", "10"), ("tut-lr0.0015-b32-e10", "0.0015", "32", "10"),
        ("tut-lr0.002-b32-e10", "0.002", "32", "10"), ("tut-lr0.005-b32-e10", "0.005", "32", "10"),
        ("tut-lr0.0015-b64-e10", "0.0015", "64", "10"), ("tut-lr0.0015-b128-e10", "0.0015", "128", "10"),
        ("tut-lr0.0015-b256-e10", "0.0015", "256", "10"),
        ("tut-lr0.002-b32-e50", "0.002", "32", "50"), ("tut-lr0.0015-b64-e50", "0.0015", "64", "50"),
    }
    for run in runs:  # the tutorial's network and plain SGD on the summed loss, nothing more
        assert run["train.loss_reduction"] == "sum"
        assert (run["train.activation"], run["train.pool"], run["train.init"]) == ("sigmoid", "avg", "randn")
        assert run["train.channels"] == "[6,16]" and run["train.optimizer"] == "sgd"
        assert (run["train.momentum"], run["train.nesterov"], run["train.weight_decay"]) == ("0.0", "false", "0.0")
        assert (run["train.schedule"], run["train.warmup_epochs"]) == ("constant", "0")
        assert run["train.early_stopping.patience"] == "0"
        assert all(run[f"train.augment.{k}"] == "0" for k in ("max_shift", "max_rotation", "max_scale", "elastic_alpha"))


def test_only_and_set_narrow_and_override_the_runs():
    runs = dry_run("--only", "epochs", "-S", "train.epochs=1", "-S", "normalize.limit=2000")
    # 10 and 50 epochs both become 1: the epochs study collapses to its two configurations.
    assert [r["name"] for r in runs] == ["tut-lr0.002-b32-e1", "tut-lr0.0015-b64-e1"]
    assert all(r["train.epochs"] == "1" and r["normalize.limit"] == "2000" for r in runs)
    assert [r["name"] for r in dry_run("--only", "batch")] == [
        "tut-lr0.0015-b32-e10", "tut-lr0.0015-b64-e10", "tut-lr0.0015-b128-e10", "tut-lr0.0015-b256-e10"]


@pytest.mark.parametrize("args, message", [
    (["--only", "momentum"], "--only momentum: expected one of lr, batch, epochs"),
    (["-S", "train.lr"], "--set 'train.lr': expected KEY=VALUE"),
    (["-S", "train.epochs=ten"], "--set train.epochs=ten: expected an integer"),
])
def test_bad_options_fail_in_one_line(args, message):
    result = lenet(ROOT, "--dry-run", *args)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")


def test_tables_put_ours_beside_the_tutorials():
    found = {"tut-lr0.005-b32-e10": Experiment(
        "tut-lr0.005-b32-e10", "2026-12-01T09:00:00", {},
        {"metrics/eval.json": {"test_accuracy": 0.97125}, "metrics/train.json": {"best_epoch": 9, "epochs_run": 10}})}
    text = studies.tables([studies.STUDIES[0]], {}, found, {"tut-lr0.005-b32-e10": 12.34})
    lines = text.splitlines()
    assert lines[0] == "**Learning rate (batch 32, 10 epochs)**"
    assert "| 0.005 | 32 | 10 | 96.93% | 97.12% | 9 of 10 | 12.3 s |" in lines
    assert "| 0.001 | 32 | 10 | 95.58% | not run | — | — |" in lines


needs_mnist = needs_mirror
SMALL = ["--only", "epochs", "-S", "train.epochs=1", "-S", "normalize.limit=2000",
         "-S", "normalize.val_size=500", "--poll", "2"]


def scratch_repo(root: Path) -> Path:
    """A committed git + DVC copy of the project (the queue runs only what git tracks)."""
    repo = root / "repo"
    copy_project(repo)
    init_repo(repo)
    commit_all(repo, "start")
    return repo


@pytest.mark.slow
@needs_mnist
def test_the_command_queues_runs_and_tabulates_two_small_runs(tmp_path):
    repo = scratch_repo(tmp_path)
    result = lenet(repo, *SMALL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 runs finished" in result.stderr
    assert "tut-lr0.002-b32-e1: Running" in result.stderr or "tut-lr0.002-b32-e1: Queued" in result.stderr

    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True,
                                      text=True, check=True).stdout)
    accuracy = {rev["name"]: rev["data"]["metrics"]["metrics/eval.json"]["data"]["test_accuracy"]
                for baseline in shown for exp in baseline.get("experiments") or [] for rev in exp["revs"]}
    assert sorted(accuracy) == ["tut-lr0.0015-b64-e1", "tut-lr0.002-b32-e1"]
    for (lr, batch), name in [(("0.002", "32"), "tut-lr0.002-b32-e1"), (("0.0015", "64"), "tut-lr0.0015-b64-e1")]:
        row = re.search(rf"^\| {lr} \| {batch} \| 1 \| [^|]+ \| ([0-9.]+)% \| 1 of 1 \| ([0-9.]+) s \|$",
                        result.stdout, re.MULTILINE)
        assert row, result.stdout
        assert float(row[1]) == pytest.approx(100 * accuracy[name], abs=0.005)
        assert 0 < float(row[2]) < 120
    assert result.stdout.count("| 1 of 1 |") == 4  # both runs, each in the 10- and 50-epoch rows

    again = lenet(repo, *SMALL, "--table-only")
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout
    refused = lenet(repo, *SMALL)  # the runs exist: queueing them again would fail half-way
    assert refused.returncode == 1
    assert "experiments already exist: tut-lr0.0015-b64-e1 tut-lr0.002-b32-e1" in refused.stderr

    # The curated `dvc exp show` of the README: test accuracy first, best first, no per-class columns.
    curated = subprocess.run(shlex.split(studies.EXP_SHOW) + ["--md"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.splitlines()
    header = [cell.strip() for cell in curated[0].strip("|").split("|")]
    assert header[:2] == ["Experiment", "test_accuracy"]
    assert {"train.lr", "train.batch_size", "train.loss_reduction"} <= set(header)
    assert "train.seed" not in header and "train.hidden" not in header  # the same in every row
    assert not any(c.startswith(("per_class", "val_", "train_", "data/")) for c in header)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in curated[2:]]
    ours = [float(row[1]) for row in rows if "tut-" in row[0]]
    assert ours == sorted(accuracy.values(), reverse=True)


@pytest.mark.slow
@needs_mnist
def test_failed_runs_show_their_log_and_fail_the_command(tmp_path):
    repo = scratch_repo(tmp_path)
    result = lenet(repo, *SMALL, "-S", "train.lr=-1")
    assert result.returncode == 1
    assert "tut-lr-1-b32-e1: Failed" in result.stderr
    # the train stage's own one-line error, from `dvc queue logs`
    assert "error: params.yaml: train.lr must be greater than 0, got -1" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        "error: some runs failed (their logs are above; dvc queue logs NAME shows them whole)"
    assert "| -1 | 32 | 1 | 96.15% | not run | — | — |" in result.stdout


def test_a_queue_worker_that_stopped_with_runs_queued_is_restarted(monkeypatch):
    """DVC's file-based broker can end its worker early; waiting must not hang forever."""
    from lenet import exp_queue

    statuses = iter([
        "abc1234  run-a  09:06 AM  Success\nabc1235  run-b  09:06 AM  Queued\n\nWorker status: 0 active, 0 idle\n",
        "abc1234  run-a  09:06 AM  Success\nabc1235  run-b  09:06 AM  Running\n\nWorker status: 1 active, 0 idle\n",
        "abc1234  run-a  09:06 AM  Success\nabc1235  run-b  09:06 AM  Success\n\nWorker status: 0 active, 0 idle\n",
    ])
    monkeypatch.setattr(exp_queue, "dvc", lambda *args, check=True: subprocess.CompletedProcess(
        ["dvc", *args], 0, stdout=next(statuses), stderr=""))
    restarts = []
    monkeypatch.setattr(exp_queue, "start_queue", lambda jobs=1: restarts.append(jobs))
    assert exp_queue.wait_for(["run-a", "run-b"], set(), poll=0) == {"run-a": "Success", "run-b": "Success"}
    assert restarts == [1]
