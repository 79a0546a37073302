"""``lenet studies``: the report's studies, its ideas and the ablation as queued DVC experiments.

The planning, table and figure tests run in seconds (figures from small fake runs); the
end-to-end tests queue one-epoch runs on a small MNIST subset in a scratch git + DVC copy
of the repository, run the queue and check tables and figures against ``dvc exp show``.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from lenet import exp_queue, studies
from lenet.curves import study_figure
from lenet.study_plans import STUDIES
from stages.common.params import load_params
from tests.mnist_mirror import MIRROR, needs_mirror
from tests.scratch_project import commit_all, copy_project, init_repo

ROOT = Path(__file__).resolve().parents[1]
STUDY = {study.key: study for study in STUDIES}


def lenet(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MNIST_MIRROR=str(MIRROR),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    # A bound, so that a hang (DVC's, once) fails this test instead of holding CI to its limit.
    return subprocess.run([sys.executable, "-m", "lenet.cli", "studies", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def dry_run(*args: str) -> list[dict[str, str]]:
    """The -S overrides of each `dvc exp run` line printed by --dry-run, with its name."""
    result = lenet(ROOT, "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    runs = []
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        assert words[:4] == ["dvc", "exp", "run", "--queue"] and words[-2] == "-n"
        pairs = words[4:-2]
        assert pairs[::2] == ["-S"] * (len(pairs) // 2)  # every other word is -S, each key once
        sets = dict(value.split("=", 1) for value in pairs[1::2])
        assert len(sets) == len(pairs) // 2
        runs.append({"name": words[-1], "line": line, **sets})
    return runs


@pytest.mark.slow
def test_dry_run_queues_each_distinct_run_once_from_the_preset():
    runs = dry_run()
    names = [run["name"] for run in runs]
    assert len(names) == len(set(names)) == 27  # 3 seeds, 8 more of the studies, 7 ideas, 9 ablation steps
    by_name = {run["name"]: run for run in runs}
    for name, lr, batch, epochs in [("tut-lr0.001-b32-e10", "0.001", "32", "10"), ("tut-lr0.0015-b256-e10", "0.0015",
                                     "256", "10"), ("tut-lr0.002-b32-e50", "0.002", "32", "50")]:
        run = by_name[name]
        assert (run["+preset"], run["train.lr"], run["train.batch_size"], run["train.epochs"]) == (
            "tutorial", lr, batch, epochs)
        assert len(run["line"]) < 130  # the report's setup is one -S, not twenty
    assert by_name["tut-lr0.0015-b64-e50-s2"]["train.seed"] == "2"
    assert by_name["idea-cosine-lr0.005-e50"]["train.schedule"] == "cosine"
    assert by_name["idea-stop-1e-3-e50"]["train.early_stopping.min_delta"] == "0.001"
    # The ablation adds one idea at a time, with params.yaml's values, and ends at params.yaml itself.
    steps = [run for run in runs if run["name"].startswith("abl-")]
    assert [len(run) for run in steps] == sorted(len(run) for run in steps[:-1]) + [2]
    epochs = load_params("train", root=Path(__file__).resolve().parents[1]).train.epochs
    assert steps[-1]["line"] == f"dvc exp run --queue -n abl-9-recipe-e{epochs}"
    assert (steps[4]["train.lr"], steps[4]["train.loss_reduction"]) == ("0.05", "mean")
    assert steps[7]["train.channels"] == "[8,24]"


@pytest.mark.slow
def test_only_and_set_narrow_and_override_the_runs():
    runs = dry_run("--only", "epochs", "-S", "train.epochs=1", "-S", "normalize.limit=2000")
    # 10 and 50 epochs both become 1: the epochs study collapses to its two configurations.
    assert [r["name"] for r in runs] == ["tut-lr0.002-b32-e1", "tut-lr0.0015-b64-e1"]
    assert all(r["train.epochs"] == "1" and r["normalize.limit"] == "2000" for r in runs)
    assert [r["name"] for r in dry_run("--only", "batch")] == [
        "tut-lr0.0015-b32-e10", "tut-lr0.0015-b64-e10", "tut-lr0.0015-b128-e10", "tut-lr0.0015-b256-e10"]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--only", "momentum"], "--only momentum: expected one of best, lr, batch, epochs, ideas, ablation"),
    (["-S", "train.lr"], "--set 'train.lr': expected KEY=VALUE"),
    (["-S", "train.lrr=1"], "-S +preset=tutorial -S train.lr=0.0015"),  # Hydra: no such key
])
def test_bad_options_fail_in_one_line(args, message):
    result = lenet(ROOT, "--dry-run", "--only", "best", *args)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")


def fake_history(epochs: int, start: float, validation: bool = False) -> dict:
    accuracy = [start + (0.99 - start) * (1 - 0.7 ** e) for e in range(1, epochs + 1)]
    history = {"epoch": list(range(1, epochs + 1)), "train_loss": [1 - a for a in accuracy], "train_accuracy": accuracy}
    if validation:
        history |= {"val_loss": [1.1 - a for a in accuracy], "val_accuracy": [a - 0.01 for a in accuracy]}
    return history


def fake_runs(study):
    """The study's runs as planned from the repository's params.yaml and preset."""
    return studies.plan([study], {})[0][study.key]


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # Hydra composes params.yaml of the working directory, as DVC does


def test_tables_put_ours_beside_the_reports_with_memory_for_the_batch_study():
    runs = fake_runs(STUDY["batch"])
    results = {runs[0].name: studies.Result(0.96012, "10 of 10", [12.0, 13.0], 390, fake_history(10, 0.8))}
    lines = studies.table(STUDY["batch"], runs, results).rstrip().splitlines()
    assert lines[0] == "**Batch size (lr 0.0015, 10 epochs)**"
    assert lines[2] == "| setting | report | ours: test accuracy | epoch kept | time per epoch | peak memory |"
    assert "| LR=0.0015, BS=32, Epochs=10 | 95.83%, 13 min/epoch | 96.01% | 10 of 10 | 12.5 s | 390 MiB |" in lines
    assert "| LR=0.0015, BS=256, Epochs=10 | 94.84%, 5 min/epoch | not run | — | — | — |" in lines
    assert lines[-1] == "Training time: 25 s for 1 run (their epochs added up, from their logs)."
    assert "peak memory" not in studies.table(STUDY["lr"], fake_runs(STUDY["lr"]), {})


def colours_drawn(figure) -> list:
    return [line.get_color() for line in figure.axes[0].get_lines()]


def test_a_study_figure_draws_every_run_in_its_own_colour_labelled_as_the_report_does(tmp_path):
    runs = fake_runs(STUDY["ideas"])  # eight runs on one chart
    results = {run.name: studies.Result(0.98, "50 of 50", [], None, fake_history(50, 0.6 + 0.03 * k))
               for k, run in enumerate(runs)}
    path = studies.write_figure(STUDY["ideas"], runs, results, tmp_path)
    assert path == tmp_path / "ideas.png" and matplotlib.image.imread(path).shape[2] in (3, 4)
    figure = study_figure(STUDY["ideas"].title, {run.label: results[run.name].history for run in runs})
    axes = figure.axes[0]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == [run.label for run in runs]
    assert len(axes.get_lines()) == 8 and len({str(c) for c in colours_drawn(figure)}) == 8
    assert axes.get_xlabel() == "epoch" and axes.get_ylabel().startswith("training accuracy")
    low, high = axes.get_ylim()  # every curve inside the chart
    assert low < min(min(r.history["train_accuracy"]) for r in results.values()) and high > 0.99
    assert list(axes.get_lines()[3].get_ydata()) == results[runs[3].name].history["train_accuracy"]


def test_more_than_ten_runs_still_get_distinct_colours_and_validation_is_dashed():
    histories = {f"LR={k}": fake_history(5, 0.5 + 0.01 * k, validation=k == 11) for k in range(12)}
    figure = study_figure("twelve", histories)
    lines = figure.axes[0].get_lines()
    assert len(lines) == 13  # twelve training curves and one validation curve
    assert len({tuple(np.round(line.get_color(), 6)) for line in lines[:12]}) == 12
    assert lines[-1].get_linestyle() == "--" and lines[-1].get_label() == "LR=11 (validation)"
    assert lines[-1].get_color() is lines[-2].get_color() or np.allclose(lines[-1].get_color(), lines[-2].get_color())


def show_json(*experiments) -> str:
    """What `dvc exp show --json` prints for one baseline holding ``experiments``."""
    entries = []
    for name, state, timestamp, accuracy in experiments:
        entries.append({"name": name, "executor": None if state is None else {"state": state},
                        "revs": [{"rev": f"{name}-sha", "name": name, "data": {
                            "timestamp": timestamp, "params": {"params.yaml": {"data": {"train": {"lr": 0.1}}}},
                            "metrics": {"metrics/eval.json": {"data": {"test_accuracy": accuracy}}}}}]})
    return json.dumps([{"rev": "workspace", "data": {}, "experiments": None},
                       {"rev": "abc", "name": "main", "data": {}, "experiments": entries}])


def test_experiments_come_from_dvc_exp_show_json_with_their_state(monkeypatch):
    output = show_json(("done", None, "2026-12-04T08:00:00", 0.98), ("ok", "success", "2026-12-04T08:01:00", 0.97),
                       ("bad", "failed", "2026-12-04T08:02:00", 0.5), ("bad", "queued", "2026-12-04T08:03:00", 0.5),
                       ("next", "running", "2026-12-04T08:04:00", 0.5))
    calls = []
    monkeypatch.setattr(exp_queue, "dvc", lambda *args, check=True, timeout=None: calls.append((args, timeout)) or
                        subprocess.CompletedProcess(["dvc", *args], 0, stdout=output, stderr=""))
    found = exp_queue.experiments("HEAD", 3)
    assert calls == [(("exp", "show", "--json", "--rev", "HEAD", "-n", "3"), exp_queue.LOOK_SECONDS)]
    assert {name: e.state for name, e in found.items()} == {"done": "done", "ok": "done", "bad": "queued",
                                                            "next": "running"}
    assert found["done"].metrics == {"metrics/eval.json": {"test_accuracy": 0.98}} and found["done"].rev == "done-sha"
    assert found["next"].metrics == {}  # a run not done has no metrics of its own
    assert found["ok"].params == {"train": {"lr": 0.1}}


def test_logs_give_epoch_times_and_peak_memory():
    console = ("epoch 1/2: train loss 0.5 acc 0.8 | lr 0.0015 | 4.5s\n"
               "epoch 2/2: train loss 0.3 acc 0.9 | val loss 0.3 acc 0.9 | lr 0.0015 | 5.5s\n"
               "peak memory: 412 MiB (train 290 MiB, workers 122 MiB)\n")
    assert exp_queue.epoch_seconds(console) == [4.5, 5.5]
    assert exp_queue.peak_memory_mib(console) == 412
    assert exp_queue.epoch_seconds(None) == [] and exp_queue.peak_memory_mib("") is None


def test_a_queue_worker_that_stopped_with_runs_queued_is_started_again(monkeypatch):
    """DVC's file-based broker can end its worker early; waiting must not hang forever."""
    states = iter([{"run-a": "done", "run-b": "queued"}, {"run-a": "done", "run-b": "running"},
                   {"run-a": "done", "run-b": "done"}])
    monkeypatch.setattr(exp_queue, "experiments", lambda rev="HEAD", num=1: {
        name: exp_queue.Experiment(name, "", state, "", {}, {}) for name, state in next(states).items()})
    starts = []
    monkeypatch.setattr(exp_queue, "start_queue", lambda jobs=1: starts.append(jobs))
    assert exp_queue.wait_for(["run-a", "run-b"], poll=0) == {"run-a": "done", "run-b": "done"}
    assert starts == [1]


needs_mnist = needs_mirror
SMALL = ["--only", "epochs", "-S", "train.epochs=1", "-S", "normalize.limit=2000", "-S", "train.lr=0.005",
         "--poll", "2"]


def scratch_repo(root: Path) -> Path:
    """A committed git + DVC copy of the project."""
    repo = root / "repo"
    copy_project(repo)
    init_repo(repo)
    commit_all(repo, "start")
    return repo


@pytest.mark.slow
def test_table_only_with_nothing_to_show_says_so_in_one_line(tmp_path):
    repo = scratch_repo(tmp_path)
    started = time.monotonic()
    result = lenet(repo, "--table-only")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: none of the 27 runs has finished among the experiments of HEAD (-n 1); "
        "`lenet studies` queues and runs them"]
    assert time.monotonic() - started < 60  # one dvc exp show, nothing queued


@pytest.mark.slow
@needs_mnist
def test_the_command_queues_runs_tabulates_and_draws_two_small_runs(tmp_path):
    repo = scratch_repo(tmp_path)
    result = lenet(repo, *SMALL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 runs finished" in result.stderr
    assert "tut-lr0.005-b32-e1: queued" in result.stderr or "tut-lr0.005-b32-e1: running" in result.stderr

    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True,
                                      text=True, check=True).stdout)
    accuracy = {rev["name"]: rev["data"]["metrics"]["metrics/eval.json"]["data"]["test_accuracy"]
                for baseline in shown for exp in baseline.get("experiments") or [] for rev in exp["revs"]}
    assert sorted(accuracy) == ["tut-lr0.005-b32-e1", "tut-lr0.005-b64-e1"]
    for batch, name in [("32", "tut-lr0.005-b32-e1"), ("64", "tut-lr0.005-b64-e1")]:
        row = re.search(rf"^\| LR=0.005, BS={batch}, Epochs=1 \| [^|]+ \| ([0-9.]+)% \| 1 of 1 \| ([0-9.]+) s \|$",
                        result.stdout, re.MULTILINE)
        assert row, result.stdout
        assert float(row[1]) == pytest.approx(100 * accuracy[name], abs=0.005)
        assert 0 < float(row[2]) < 120
    assert result.stdout.count("| 1 of 1 |") == 4  # both runs, each in the 10- and 50-epoch rows
    figure = matplotlib.image.imread(repo / "studies" / "epochs.png")
    assert figure.shape[0] > 200 and figure[..., :3].std() > 0.05  # a chart, not a blank canvas

    again = lenet(repo, *SMALL, "--table-only")
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout
    reused = lenet(repo, *SMALL)  # the runs are done: nothing is queued again
    assert reused.returncode == 0 and "dvc exp run --queue" not in reused.stderr
    assert reused.stdout == result.stdout
    other = lenet(repo, *SMALL[:-2], "-S", "normalize.limit=1000", "--table-only")
    assert other.returncode == 1  # the same names with other params: refused, never shown as these runs
    assert other.stderr.strip().splitlines() == [
        "error: experiment tut-lr0.005-b32-e1 has normalize.limit=2000, not 1000; remove it "
        "(dvc exp remove tut-lr0.005-b32-e1) or pass other -S values"]


@pytest.mark.slow
@needs_mnist
def test_failed_runs_show_their_log_and_fail_the_command(tmp_path):
    repo = scratch_repo(tmp_path)
    result = lenet(repo, *SMALL, "-S", "train.early_stopping.monitor=val_loss")  # no validation split
    assert result.returncode == 1
    assert "tut-lr0.005-b32-e1: failed" in result.stderr
    # the train stage's own one-line error, from `dvc queue logs`
    assert "train.early_stopping.monitor is val_loss, but data/prepared/val.parquet is empty" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        "error: some runs failed (their logs are above; dvc queue logs NAME shows them whole)"
    assert "| LR=0.005, BS=32, Epochs=1 | 96.15% | not run | — | — |" in result.stdout


def test_a_look_at_the_queue_that_fails_once_is_retried(monkeypatch):
    looks = iter([exp_queue.LenetError("dvc exp show --json ... failed: ERROR: directory '.dvc/tmp/exps/x' does not exist"),
                  {"run-a": "done"}])

    def experiments(rev="HEAD", num=1):
        look = next(looks)
        if isinstance(look, Exception):
            raise look
        return {name: exp_queue.Experiment(name, "", state, "", {}, {}) for name, state in look.items()}

    monkeypatch.setattr(exp_queue, "experiments", experiments)
    assert exp_queue.wait_for(["run-a"], poll=0) == {"run-a": "done"}


def test_a_dvc_command_that_hangs_is_killed_and_named_in_one_line(tmp_path, monkeypatch):
    """dvc exp show once hung for good in CI; a look must end, and wait_for then retries it."""
    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'pid'}\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    started = time.monotonic()
    with pytest.raises(exp_queue.LenetError) as raised:
        exp_queue.dvc("exp", "show", "--json", "--rev", "HEAD", timeout=0.5)
    assert time.monotonic() - started < 10
    assert str(raised.value) == "dvc exp show --json ... did not answer in 0.5 s"
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):  # killed, not left sleeping
        os.kill(pid, 0)
