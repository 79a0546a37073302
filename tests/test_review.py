"""Reviewing a change the DVC way, end to end on the small subset, in a scratch git + DVC repo.

A baseline (dvc.lock and metrics committed) on ``main``; a branch that changes ``train.lr``:
``dvc metrics diff main`` and ``lenet report`` must show both sides. Then two queued
experiments with different ``train.lr``: ``dvc exp show`` and ``dvc plots diff`` must hold both.
Needs the local MNIST mirror, like tests/test_pipeline.py; skipped, visibly, without one.
"""

import json
import re
import subprocess
import sys
import time

import matplotlib.image
import numpy as np
import pytest

from tests.params_file import set_params
from tests.mnist_mirror import needs_mirror
from tests.scratch_project import GIT, copy_project
from tests.test_pipeline import SMALL, sh

pytestmark = [
    pytest.mark.slow,
    needs_mirror,
]

BASE_LR, BRANCH_LR = 0.02, 0.01
QUEUED = {"lr001": 0.01, "lr003": 0.03}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A scratch repo whose ``main`` carries a small run: dvc.lock and metrics committed."""
    root = tmp_path_factory.mktemp("review")
    copy_project(root)
    set_params(root, {**SMALL, "train.lr": BASE_LR})  # 2 epochs: curves are lines, not dots
    sh(root, "git", "init", "-q", "-b", "main")
    sh(root, *GIT, "add", "-A")
    sh(root, *GIT, "commit", "-qm", "code")
    sh(root, "dvc", "repro")
    sh(root, *GIT, "add", "-A")  # dvc.lock, metrics/*.json, metrics/history.csv, .gitignore
    sh(root, *GIT, "commit", "-qm", "baseline run")
    assert sh(root, "git", "status", "--porcelain", "--untracked-files=no") == ""
    tracked = sh(root, "git", "ls-files", "dvc.lock", "metrics").split()
    assert {"dvc.lock", "metrics/eval.json", "metrics/train.json", "metrics/history.csv"} <= set(tracked)
    yield root
    subprocess.run(["dvc", "queue", "stop"], cwd=root, capture_output=True)  # no idle worker left behind


def markdown_rows(table: str, metric: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("|") and f" {metric} " in line]


def test_branch_with_new_lr_has_a_real_metrics_diff_and_report(repo):
    sh(repo, "git", "checkout", "-q", "-b", "lower-lr")
    set_params(repo, {"train.lr": BRANCH_LR})
    sh(repo, "dvc", "repro")

    diff = sh(repo, "dvc", "metrics", "diff", "main", "--md")
    header = [c.strip() for c in diff.splitlines()[0].strip("|").split("|")]
    assert header == ["Path", "Metric", "main", "workspace", "Change"], diff
    (row,) = markdown_rows(diff, "test_accuracy")
    old, new, change = (float(v) for v in row[2:5])  # numbers, not '-'
    assert change == pytest.approx(new - old, abs=1e-4) and change != 0

    output = sh(repo, sys.executable, "-m", "lenet.cli", "report", "--out", "review")
    report = (repo / "review/report.md").read_text()
    assert report in output  # printed as written
    assert re.search(rf"\| `train.lr` \| {BASE_LR} \| {BRANCH_LR} \|", report), report
    base_eval = json.loads(sh(repo, "git", "show", "main:metrics/eval.json"))
    new_eval = json.loads((repo / "metrics/eval.json").read_text())
    verb = "rose" if new_eval["test_accuracy"] > base_eval["test_accuracy"] else "fell"
    fewer = round((new_eval["test_accuracy"] - base_eval["test_accuracy"]) * 2000)
    assert (f"Test accuracy {verb} from {100 * base_eval['test_accuracy']:.2f}% to "
            f"{100 * new_eval['test_accuracy']:.2f}% ({100 * (new - old):+.2f} points, "
            f"{abs(fewer)} {'fewer' if fewer > 0 else 'more'} errors in 2,000).") in report

    image = matplotlib.image.imread(repo / "review/curves.png")[..., :3]
    blue, orange = np.array([31, 119, 180]) / 255, np.array([255, 127, 14]) / 255  # main, workspace
    for colour in (blue, orange):  # both revisions' curves drawn, not a blank canvas
        assert (np.abs(image - colour).max(axis=-1) < 0.02).sum() > 200


def wait_for_queue(root, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sh(root, "dvc", "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status.split("Worker status")[0]):
            return status
        time.sleep(3)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


def experiments(shown: list) -> dict[str, dict]:
    """Name -> data of every experiment in ``dvc exp show --json`` output."""
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for run in experiment["revs"]:
                found[run["name"]] = run["data"]
    return found


def test_queued_experiments_show_and_plot_side_by_side(repo):
    sh(repo, "git", "checkout", "-q", "-f", "main")
    for name, lr in QUEUED.items():
        sh(repo, "dvc", "exp", "run", "--queue", "-S", f"train.lr={lr}", "-n", name)
    sh(repo, "dvc", "queue", "start", "-j", "1")  # the worker inherits MNIST_MIRROR from sh
    status = wait_for_queue(repo)
    assert all(re.search(rf"{name}\s.*Success", status) for name in QUEUED), status

    runs = experiments(json.loads(sh(repo, "dvc", "exp", "show", "--json")))
    for name, lr in QUEUED.items():
        params = runs[name]["params"]["params.yaml"]["data"]
        scores = runs[name]["metrics"]["metrics/eval.json"]["data"]
        assert params["train"]["lr"] == lr and 0 < scores["test_accuracy"] <= 1
    assert runs["lr001"]["metrics"] != runs["lr003"]["metrics"]

    plots = json.loads(sh(repo, "dvc", "plots", "diff", *QUEUED, "--json"))["data"]
    (loss,) = plots["Loss"]
    assert loss["revisions"] == list(QUEUED)
    first_epoch_lr = {row["rev"]: float(row["lr"]) for row in loss["content"]["data"]["values"] if row["epoch"] == "1"}
    assert first_epoch_lr == QUEUED  # each revision's own history, not one drawn twice

    sh(repo, "dvc", "plots", "diff", *QUEUED, "-o", "plots_diff")
    page = (repo / "plots_diff/index.html").read_text()
    assert all(f'"rev": "{name}"' in page or f'"rev":"{name}"' in page for name in QUEUED)

