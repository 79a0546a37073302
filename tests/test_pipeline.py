"""End to end: real ``dvc repro`` on a small MNIST subset in a scratch copy of the repo.

Needs the MNIST files (``tests/mnist_mirror.py`` says where it looks); skipped, visibly,
without them.
"""

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.plot import FIGURES
from tests.mnist_mirror import MIRROR, needs_mirror
from tests.params_file import set_params
from tests.scratch_project import commit_all, copy_project, init_repo

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    needs_mirror,
]

SMALL = {  # a run of about a minute: 1,500 training, 500 validation, 1,000 test images
    "normalize.limit": 2000,
    "normalize.val_size": 500,
    "train.epochs": 2,
    "train.warmup_epochs": 0,
    "train.batch_size": 32,
    "train.lr": 0.02,
}




def sh(root: Path, *args: str) -> str:
    env = dict(os.environ, MNIST_MIRROR=str(MIRROR),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    result = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git + DVC copy of the project after one full ``dvc repro`` on the small subset."""
    root = tmp_path_factory.mktemp("repo")
    copy_project(root)
    set_params(root, SMALL)
    init_repo(root)
    commit_all(root, "start")
    output = sh(root, "dvc", "repro")
    assert stages_run(output) == {"fetch", "normalize", "train", "evaluate", "plot"}
    commit_all(root, "first run")
    return root


def test_every_output_is_there_and_sane(repo):
    raw = sorted(p.name for p in (repo / "data/raw").iterdir())
    assert raw == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                   "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    assert sorted(p.name for p in (repo / "data/prepared").iterdir()) == ["test.parquet", "train.parquet", "val.parquet"]
    assert (repo / "models/model.npz").exists() and (repo / "models/model.json").exists()

    train = json.loads((repo / "metrics/train.json").read_text())
    assert sorted(train) == ["best_epoch", "epochs_run", "train_accuracy", "train_loss", "val_accuracy", "val_loss"]
    assert train["epochs_run"] == 2 and 1 <= train["best_epoch"] <= 2
    assert train["val_accuracy"] > 0.5  # 2 epochs on 1,500 images: far above chance (0.1)
    run = json.loads((repo / "metrics/train_run.json").read_text())
    assert run["stop_reason"] == "completed 2 epochs" and run["parameters"] > 0

    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    assert sorted(evaluation) == ["test_accuracy", "test_loss"]  # scores only: what exp show compares
    assert 0.5 < evaluation["test_accuracy"] <= 1 and np.isfinite(evaluation["test_loss"])

    history = (repo / "metrics/history.csv").read_text().splitlines()
    assert history[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr"
    assert len(history) == 3
    confusion = [line.split(",") for line in (repo / "metrics/confusion.csv").read_text().splitlines()]
    assert confusion[0] == ["actual", "predicted", "count"] and len(confusion) == 101
    counts = {(int(a), int(p)): int(n) for a, p, n in confusion[1:]}
    assert sorted(counts) == [(a, p) for a in range(10) for p in range(10)]
    assert sum(counts.values()) == 2000
    assert sum(counts[d, d] for d in range(10)) / 2000 == pytest.approx(evaluation["test_accuracy"])
    per_class = [line.split(",") for line in (repo / "metrics/per_class.csv").read_text().splitlines()]
    assert per_class[0] == ["digit", "precision", "recall"] and [row[0] for row in per_class[1:]] == list("0123456789")
    for digit, precision, recall in per_class[1:]:
        d = int(digit)
        assert float(recall) == pytest.approx(counts[d, d] / sum(counts[d, p] for p in range(10)), abs=1e-5)

    pngs = sorted(p.name for p in (repo / "plots").glob("*.png"))
    assert pngs == sorted(FIGURES)
    assert all((repo / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not (repo / "checkpoints/train.npz").exists()  # removed once training succeeded


def test_a_second_repro_does_nothing(repo):
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status")
    assert stages_run(sh(repo, "dvc", "repro")) == set()


def test_changing_lr_reruns_exactly_train_evaluate_plot(repo):
    set_params(repo, {"train.lr": 0.01})
    status = sh(repo, "dvc", "status")
    assert "train:" in status and "fetch:" not in status and "normalize:" not in status
    assert stages_run(sh(repo, "dvc", "repro")) == {"train", "evaluate", "plot"}
    diff = sh(repo, "dvc", "metrics", "diff")
    assert "metrics/train.json" in diff and "val_loss" in diff
    params_diff = sh(repo, "dvc", "params", "diff")
    assert "train.lr" in params_diff and "0.02" in params_diff and "0.01" in params_diff


def test_exp_run_with_set_param_is_recorded_by_exp_show(repo):
    output = sh(repo, "dvc", "exp", "run", "-S", "train.lr=0.03", "-n", "lr003")
    assert stages_run(output) == {"train", "evaluate", "plot"}
    table = sh(repo, "dvc", "exp", "show", "--csv")
    run = next(row for row in csv.DictReader(io.StringIO(table)) if row["Experiment"] == "lr003")
    assert float(run["train.lr"]) == 0.03 and 0 < float(run["test_accuracy"]) <= 1
    # What `dvc exp show` leads with, as it comes: a few metric columns, the test figures first.
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json"))
    metrics = next(rev["data"]["metrics"] for commit in shown for exp in commit.get("experiments") or []
                   for rev in exp["revs"] if rev["name"] == "lr003")
    columns = [key for data in metrics.values() for key in data["data"]]
    assert list(metrics) == ["metrics/eval.json", "metrics/train.json"] and len(columns) <= 12
    assert columns[:2] == ["test_accuracy", "test_loss"]
    header = table.splitlines()[0].split(",")
    assert header.index("test_accuracy") < min(header.index(c) for c in header if c.startswith("train."))
    # ... and `dvc metrics diff` against the commit: a short table, eval.json's rows led by the
    # test accuracy. DVC orders the files as a set of paths (by the process's hash seed), so
    # eval.json's two rows come either first or right after train.json's.
    table = sh(repo, "dvc", "metrics", "diff", "HEAD", "lr003", "--all", "--md").splitlines()
    rows = [[cell.strip() for cell in line.split("|")[1:3]] for line in table if line.startswith("| metrics/")]
    assert len(rows) <= 8
    assert [name for path, name in rows if path == "metrics/eval.json"] == ["test_accuracy", "test_loss"]


def test_plots_diff_renders(repo):
    output = sh(repo, "dvc", "plots", "diff", "-o", "plots_html")
    assert (repo / "plots_html" / "index.html").exists(), output


def test_bad_param_fails_with_one_line_and_writes_nothing(repo):
    set_params(repo, {"train.lr": -1})
    before = (repo / "metrics/train.json").read_bytes()
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    result = subprocess.run([sys.executable, "-m", "stages.train"], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: params.yaml: train.lr must be greater than 0, got -1"
    assert (repo / "metrics/train.json").read_bytes() == before
    set_params(repo, {"train.lr": 0.01})
