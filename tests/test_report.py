"""``lenet report``: its sentences, tables and chart, and its failures, without training anything."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lenet.curves import curves_figure, parse_history
from lenet.report import accuracy_sentence, build_report, recall_changes
from stages.common.errors import LenetError
from tests.scratch_project import GIT, commit_all

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ("epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr\n"
           "1,0.9,0.7,0.5,0.85,0.05\n2,0.4,0.88,0.3,0.91,0.025\n")


@pytest.mark.parametrize("old, new, expected", [
    (0.9940, 0.9947, "Test accuracy rose from 99.40% to 99.47% (+0.07 points, 7 fewer errors in 10,000)."),
    (0.9947, 0.9940, "Test accuracy fell from 99.47% to 99.40% (-0.07 points, 7 more errors in 10,000)."),
    (0.9952, 0.9952, "Test accuracy did not change: 99.52% (48 errors in 10,000)."),
])
def test_accuracy_sentence_says_the_change_in_points_and_errors(old, new, expected):
    assert accuracy_sentence(old, new, 10_000, 10_000, "main", "workspace") == expected


def test_accuracy_sentence_when_a_side_is_missing_or_sizes_differ():
    assert accuracy_sentence(None, 0.9947, None, 10_000, "main", "workspace") == (
        "Test accuracy of `workspace`: 99.47% (53 errors in 10,000). "
        "`main` has no metrics/eval.json to compare with.")
    assert "`workspace` has no test accuracy" in accuracy_sentence(0.99, None, 10_000, None, "main", "workspace")
    assert "Neither `main` nor `workspace`" in accuracy_sentence(None, None, None, None, "main", "workspace")
    assert accuracy_sentence(0.9, 0.99, 2_000, 10_000, "main", "workspace") == (
        "Test accuracy rose from 90.00% to 99.00% (+9.00 points; on 2,000 and 10,000 test images, "
        "so errors are not compared).")


def test_recall_changes_above_the_threshold_largest_first():
    diff = {
        "per_class.3.recall": {"old": 0.980, "new": 0.990},       # +1.0 point
        "per_class.7.recall": {"old": 0.990, "new": 0.9885},      # -0.15 point: not above 0.15
        "per_class.5.recall": {"old": 0.2, "new": 0.2015},        # +0.15 point, a hair above in floats
        "per_class.8.recall": {"old": 0.990, "new": 0.960},       # -3.0 points
        "per_class.8.precision": {"old": 0.5, "new": 0.9},        # not a recall
        "per_class.9.recall": {"old": None, "new": 0.9},          # nothing to compare
        "test_accuracy": {"old": 0.9, "new": 0.8},
    }
    assert recall_changes(diff, 0.15) == [("8", 0.990, 0.960), ("3", 0.980, 0.990)]
    assert recall_changes(diff, 5) == []


def test_report_without_base_metrics_says_so_and_still_lists_the_new_values():
    params = {"params.yaml": {"train.lr": {"old": 0.05, "new": 0.02, "diff": -0.03},
                              "train.seed": {"old": 0, "new": 0, "diff": 0}}}
    metrics = {"metrics/eval.json": {"test_accuracy": {"old": None, "new": 0.99},
                                     "test_images": {"old": None, "new": 10000},
                                     "per_class.0.recall": {"old": None, "new": 0.98}}}
    report = build_report("main", "workspace", params, metrics, 0.15, ["workspace"], ["main"], None)
    assert "`main` has no metrics/eval.json to compare with." in report
    assert "| `train.lr` | 0.05 | 0.02 |" in report and "train.seed" not in report  # changed params only
    assert "| metrics/eval.json | test_accuracy | — | 0.99 |  |" in report
    assert "per_class.0" not in report  # per-class scores have their own section
    assert "Not compared: `main` or `workspace` has no metrics/per_class.csv." in report
    assert "`main` has no metrics/history.csv: no curves for it." in report


def test_chart_draws_both_revisions_train_and_val_on_loss_and_accuracy():
    history = parse_history(HISTORY, "x")
    figure = curves_figure({"main": history, "workspace": {**history, "val_loss": [0.6, 0.2]}})
    for axes in figure.axes:
        assert [t.get_text() for t in axes.get_legend().get_texts()] == [
            "main train", "main val", "workspace train", "workspace val"]
    loss, _ = figure.axes
    assert [list(line.get_ydata()) for line in loss.get_lines()] == [
        [0.9, 0.4], [0.5, 0.3], [0.9, 0.4], [0.6, 0.2]]


def test_history_needs_the_chart_columns_and_numbers():
    assert parse_history(HISTORY.replace(",lr\n", ",lr,seconds\n").replace("0.05\n", "0.05,1.2\n")
                         .replace("0.025\n", "0.025,1.1\n"), "x")["val_accuracy"] == [0.85, 0.91]
    with pytest.raises(LenetError, match=r"^main:metrics/history.csv: .*\(missing val_loss\)$"):
        parse_history("epoch,train_loss,train_accuracy,val_accuracy\n1,1,1,1\n", "main:metrics/history.csv")
    with pytest.raises(LenetError, match="at least one row"):
        parse_history("epoch,train_loss,train_accuracy,val_loss,val_accuracy\n", "x")
    with pytest.raises(LenetError, match="not numeric"):
        parse_history("epoch,train_loss,train_accuracy,val_loss,val_accuracy\n1,nan?,1,1,1\n", "x")


def lenet(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return subprocess.run([sys.executable, "-m", "lenet.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def git(cwd: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def metrics_only_repo(tmp_path):
    """A DVC repo whose ``main`` has no metrics yet and whose workspace has them (no training)."""
    git(tmp_path, "init", "-q", "-b", "main")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: 'true'\n    metrics:\n"
        "      - metrics/eval.json:\n          cache: false\n")
    (tmp_path / "params.yaml").write_text("train:\n  lr: 0.05\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "no run yet")
    (tmp_path / "params.yaml").write_text("train:\n  lr: 0.02\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/eval.json").write_text(json.dumps(
        {"test_accuracy": 0.99, "test_images": 10000, "per_class": {"0": {"precision": 1, "recall": 0.98}}}))
    (tmp_path / "metrics/history.csv").write_text(HISTORY)
    return tmp_path


@pytest.mark.slow
def test_report_against_a_base_that_never_ran(metrics_only_repo):
    result = lenet(metrics_only_repo, "report", "--out", "out")
    assert result.returncode == 0, result.stderr
    report = (metrics_only_repo / "out/report.md").read_text()
    assert result.stdout == report
    assert "Test accuracy of `workspace`: 99.00% (100 errors in 10,000). `main` has no metrics/eval.json" in report
    assert "| `train.lr` | 0.05 | 0.02 |" in report
    assert (metrics_only_repo / "out/curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_unknown_base_is_one_line_and_writes_nothing(metrics_only_repo):
    result = lenet(metrics_only_repo, "report", "--base", "no-such-branch", "--out", "out")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: --base no-such-branch: not a branch, tag, commit or experiment of this repository"]
    assert not (metrics_only_repo / "out").exists()


def test_outside_the_repository_root_is_one_line(tmp_path):
    result = lenet(tmp_path, "report")
    assert (result.returncode, result.stderr.strip()) == (
        1, "error: dvc.yaml: not found; run `lenet report` from the repository root")


# --- issue 17, item 4 and issue 18, item 5: a broken base, and any revision DVC accepts ----


@pytest.mark.slow
@pytest.mark.parametrize("file, content, reason", [
    ("metrics/eval.json", '{"test_accuracy": 0.9, ', "could not read main:metrics/eval.json: Expecting"),
    ("metrics/eval.json", '{"test_accuracy": "high"}',
     "could not read main:metrics/eval.json: test_accuracy is 'high', expected a number"),
    ("params.yaml", "train:\n  lr: [0.05\n", "could not read main:params.yaml: expected ',' or ']'"),
])
def test_a_broken_base_is_an_error_naming_revision_and_file_not_a_missing_one(metrics_only_repo, file, content,
                                                                              reason):
    workspace = {name: (metrics_only_repo / name).read_text() for name in ("params.yaml", "metrics/eval.json")}
    (metrics_only_repo / file).write_text(content)
    git(metrics_only_repo, "add", "-A")
    git(metrics_only_repo, "commit", "-qm", "a broken run")
    for name, text in workspace.items():
        (metrics_only_repo / name).write_text(text)
    result = lenet(metrics_only_repo, "report", "--out", "out")
    assert result.returncode == 1
    line, = result.stderr.splitlines()
    assert line.startswith(f"error: {reason}"), line
    assert not (metrics_only_repo / "out").exists()


SCORE = """import json, yaml
lr = yaml.safe_load(open("params.yaml"))["train"]["lr"]
json.dump({"test_accuracy": 1 - lr, "test_images": 100}, open("metrics/eval.json", "w"))
"""


@pytest.fixture(scope="module")
def experiment_repo(tmp_path_factory):
    """A DVC project whose one stage scores ``1 - train.lr``, with `main` and the experiment `lr005`."""
    root = tmp_path_factory.mktemp("experiments")
    git(root, "init", "-q", "-b", "main")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    (root / "score.py").write_text(SCORE)
    (root / "dvc.yaml").write_text("stages:\n  evaluate:\n    cmd: python score.py\n    deps: [score.py]\n"
                                   "    params: [train.lr]\n    metrics:\n      - metrics/eval.json:\n"
                                   "          cache: false\n")
    (root / "params.yaml").write_text("train:\n  lr: 0.05\n")
    (root / "metrics").mkdir()
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "repro", "-q"], cwd=root, check=True, capture_output=True)
    commit_all(root, "lr 0.05")
    git(root, "tag", "v1")
    subprocess.run([*dvc, "exp", "run", "-q", "-n", "lr005", "-S", "train.lr=0.005"], cwd=root, check=True,
                   capture_output=True)
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=root, check=True)  # the workspace back to main
    return root


@pytest.mark.slow
@pytest.mark.parametrize("rev", ["lr005", "experiment commit"])
def test_report_reviews_a_dvc_experiment_by_name_or_commit(experiment_repo, rev):
    if rev == "experiment commit":
        # refs/exps also holds DVC's own refs (exec/EXEC_HEAD, at the baseline commit), which
        # sort first when the baseline's hash starts with "f": take the experiment's by name.
        refs = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"],
                              cwd=experiment_repo, capture_output=True, text=True, check=True).stdout.splitlines()
        rev = next(ref.split()[0] for ref in refs if ref.endswith("/lr005"))[:10]
    result = lenet(experiment_repo, "report", "--base", "v1", "--rev", rev, "--out", "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"## `{rev}` against `v1`\n")
    assert "Test accuracy rose from 95.00% to 99.50% (+4.50 points, 4 fewer errors in 100)." in result.stdout
    assert "| `train.lr` | 0.05 | 0.005 |" in result.stdout


@pytest.mark.slow
def test_an_unknown_name_says_so_and_only_a_shallow_clone_mentions_fetch_depth(experiment_repo, tmp_path):
    result = lenet(experiment_repo, "report", "--rev", "lr5", "--out", "out")
    assert (result.returncode, result.stderr.splitlines()) == (
        1, ["error: --rev lr5: not a branch, tag, commit or experiment of this repository"])
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", experiment_repo.as_uri(), str(shallow)], check=True)
    result = lenet(shallow, "report", "--base", "HEAD~1", "--out", "out")
    assert result.stderr.splitlines() == ["error: --base HEAD~1: not a branch, tag, commit or experiment of this "
                                          "repository (this clone is shallow: in CI, check out with fetch-depth: 0)"]


def test_a_history_without_validation_draws_training_curves_only():
    text = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr\n1,0.9,0.6,,,0.1\n2,0.4,0.8,,,0.1\n"
    history = parse_history(text, "x")
    assert sorted(history) == ["epoch", "train_accuracy", "train_loss"]
    figure = curves_figure({"main": parse_history(HISTORY, "main"), "tutorial": history})
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["main train", "main val", "tutorial train"]
