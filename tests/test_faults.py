"""Faults a user's machine produces: signals, kills, damaged files, read-only directories,
params edited mid-run, training that learns nothing. Each is reproduced with real processes,
signals and files; afterwards the previous outputs (or the new ones) are whole, no temporary
file sits inside an output, and ``dvc status`` tells the truth.

Exact kill points come from a test-only hook, ``tests/fault_hook/sitecustomize.py``
(``LENET_TEST_FAULT=<point>:<SIGNAL>``, with that folder on ``PYTHONPATH``); ``SIGSTOP`` there
freezes a stage at that point so the test can act (send Ctrl-C to the whole process group,
edit params.yaml) before it goes on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.mnist_mirror import MIRROR, needs_mirror
from tests.params_file import set_params
from tests.scratch_project import commit_all, copy_project, init_repo

ROOT = Path(__file__).resolve().parents[1]

TINY = {  # the whole pipeline in about 20 s: 800 training, 200 validation, 1,000 test images
    "normalize.limit": 1000, "normalize.val_size": 200,
    "train.epochs": 3, "train.warmup_epochs": 0, "train.batch_size": 16, "train.lr": 0.03,
    "train.channels": [4, 8], "train.hidden": [32, 16], "train.workers": 1,
    "train.augment.max_shift": 0.0, "train.augment.max_rotation": 0.0, "train.augment.max_scale": 0.0,
    "train.early_stopping.patience": 0, "evaluate.batch_size": 500,
}
OUTS = {
    "fetch": ["data/raw"],
    "normalize": ["data/prepared"],
    "train": ["models", "metrics/history.csv", "metrics/train.json", "metrics/train_run.json"],
    "evaluate": ["metrics/confusion.csv", "metrics/per_class.csv", "metrics/eval.json", "metrics/model_card.md"],
    "plot": ["plots"],
}
ALL_OUTS = [out for outs in OUTS.values() for out in outs]


# --- helpers ------------------------------------------------------------------------------


def environment(**extra) -> dict:
    return dict(os.environ, MNIST_MIRROR=str(MIRROR), OPENBLAS_NUM_THREADS="1",
                PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
                PYTHONPATH=str(ROOT / "tests" / "fault_hook"), **extra)


def sh(root: Path, *args: str, ok: bool = True, **env) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=root, env=environment(**env), capture_output=True, text=True, timeout=300)
    if ok:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def stage(root: Path, name: str, *args: str, **env) -> subprocess.CompletedProcess:
    return sh(root, sys.executable, "-m", f"stages.{name}", *args, ok=False, **env)


def status(root: Path) -> dict:
    """``dvc status --json``: {} when the workspace matches dvc.lock."""
    return json.loads(sh(root, "dvc", "status", "--json").stdout or "{}")


def snapshot(root: Path, outs=ALL_OUTS) -> dict[str, bytes]:
    """Every file of ``outs``, by relative path (history.csv without its wall-clock column)."""
    files = {}
    for out in outs:
        path = root / out
        for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            data = file.read_bytes()
            if file.name == "history.csv":
                data = b"\n".join(line.rsplit(b",", 1)[0] for line in data.splitlines())
            files[str(file.relative_to(root))] = data
    return files


def status_after_rerun(root: Path) -> dict:
    """``status`` after a stage ran again: only history.csv's seconds column may differ."""
    changes = status(root)
    for entries in changes.values():
        for entry in entries:
            assert entry in ({"changed outs": {"metrics/history.csv": "modified"}},
                             {"changed deps": {"metrics/history.csv": "modified"}}), changes
    return {}


def stray_files(root: Path) -> list[str]:
    """Temporary or hidden files inside any output: DVC would record them."""
    return [name for name in snapshot(root) if Path(name).name.startswith(".") or name.endswith(".tmp")]


def staging_areas(root: Path) -> list[Path]:
    return sorted((root / ".stage-tmp").glob("*")) if (root / ".stage-tmp").is_dir() else []


def last_error_line(result: subprocess.CompletedProcess) -> str:
    """The error a stage ended with: its last line (progress lines may come before)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "done in" not in result.stderr
    assert not any(line.startswith("error: ") for line in lines[:-1]), result.stderr
    return lines[-1]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "done in" not in result.stderr
    return lines[0]


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def frozen_stage_pid(root: Path, name: str) -> int:
    """Wait until stage ``name``, run with ``LENET_TEST_FAULT=begin:SIGSTOP``, has stopped itself."""
    def find() -> int | None:
        for proc in Path("/proc").iterdir():
            try:
                if (proc.name.isdigit() and f"stages.{name}".encode() in (proc / "cmdline").read_bytes().split(b"\0")
                        and Path(os.readlink(proc / "cwd")) == root and stopped(int(proc.name))):
                    return int(proc.name)
            except OSError:  # a process that ended meanwhile
                continue
        return None
    wait_for(lambda: find() is not None)
    return find()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A git + DVC copy of the project after one ``dvc repro`` of the tiny pipeline."""
    root = tmp_path_factory.mktemp("pristine")
    copy_project(root)
    set_params(root, TINY)
    init_repo(root)
    commit_all(root, "start")
    sh(root, "dvc", "repro")
    commit_all(root, "first run")
    assert status(root) == {}
    return root


@pytest.fixture
def repo(pristine, tmp_path):
    """A fresh copy of the pristine repository for one test."""
    root = tmp_path / "repo"
    shutil.copytree(pristine, root, symlinks=True)
    return root


# --- the error boundary -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("module", ["stages.train", "lenet.cli"])
def test_help_exits_0_without_done(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "Usage" in result.stdout
    assert "done" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_unknown_option_is_a_usage_error_with_exit_2():
    result = subprocess.run([sys.executable, "-m", "stages.evaluate", "--bogus"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Usage:" in result.stderr and "No such option: --bogus" in result.stderr
    assert "Traceback" not in result.stderr and "done" not in result.stderr


UNEXPECTED = """
import sys, typer
from stages.common.cli import run
sys.argv = ["stages/demo.py"]
app = typer.Typer()
@app.command()
def main():
    raise RuntimeError("boom\\nsecond line")
run(app)
"""


@pytest.mark.slow
@pytest.mark.parametrize("debug", ["", "1"])
def test_an_unexpected_error_is_one_line_with_a_hint_or_the_traceback_on_demand(debug):
    result = subprocess.run([sys.executable, "-c", UNEXPECTED], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, LENET_DEBUG=debug))
    assert result.returncode == 1 and "done" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == "error: unexpected RuntimeError: boom (rerun with LENET_DEBUG=1 to see the traceback)"
    assert ("Traceback" in result.stderr) == bool(debug)


# --- interruptions at every stage --------------------------------------------------------


@pytest.mark.slow
@needs_mirror
@pytest.mark.parametrize("name", list(OUTS))
def test_sigint_and_sigkill_leave_the_old_outputs_whole(repo, name):
    before = snapshot(repo)
    for point in ("begin", "built"):
        for signame, code in (("SIGINT", 130), ("SIGTERM", 143), ("SIGKILL", -9)):
            result = stage(repo, name, LENET_TEST_FAULT=f"{point}:{signame}")
            case = f"{name} {signame} at {point}"
            assert result.returncode == code, f"{case}:\n{result.stderr}"
            if signame != "SIGKILL":
                assert f"interrupted ({signame})" in result.stderr and "done" not in result.stderr, case
                assert staging_areas(repo) == [], case  # cleaned up on the way out
            assert snapshot(repo) == before, case
            assert stray_files(repo) == [], case
            assert status(repo) == {}, case  # the outputs are the recorded ones, and are said to be
    # A killed run's staging area is removed by the next run, which then succeeds.
    assert staging_areas(repo)
    result = stage(repo, name)
    assert result.returncode == 0 and f"{name}: done in" in result.stderr, result.stderr
    assert staging_areas(repo) == [] and snapshot(repo) == before and status_after_rerun(repo) == {}


@pytest.mark.slow
@needs_mirror
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_interrupts_training(repo, signum):
    before = snapshot(repo)
    set_params(repo, {"train.epochs": 50})  # long enough to be caught training
    process = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=repo, env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (repo / "checkpoints/train.npz").exists())
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum and "interrupted" in err and "done" not in err, err
    assert "Traceback" not in err
    assert snapshot(repo) == before and stray_files(repo) == [] and staging_areas(repo) == []


@pytest.mark.slow
@needs_mirror
def test_ctrl_c_during_dvc_repro_normalize_records_nothing(repo):
    lock = (repo / "dvc.lock").read_bytes()
    process = subprocess.Popen(["dvc", "repro", "-f", "-s", "normalize"], cwd=repo,
                               env=environment(LENET_TEST_FAULT="begin:SIGSTOP"), start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    frozen_stage_pid(repo, "normalize")
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    os.killpg(process.pid, signal.SIGCONT)
    out, err = process.communicate(timeout=120)
    assert process.returncode != 0, out + err
    assert (repo / "dvc.lock").read_bytes() == lock
    # DVC removed data/prepared before running the stage; the stage added nothing half-made.
    prepared = repo / "data/prepared"
    assert not prepared.exists() or sorted(p.name for p in prepared.iterdir()) in (
        [], ["test.parquet", "train.parquet", "val.parquet"])
    assert "normalize" in status(repo)  # not "up to date"
    assert staging_areas(repo) == []


# --- damaged inputs ------------------------------------------------------------------------


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 3 // 4] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "random model.npz": lambda m: (m / "model.npz").write_bytes(np.random.default_rng(0).bytes(5000)),
    "empty model.npz": lambda m: (m / "model.npz").write_bytes(b""),
    "missing model.npz": lambda m: (m / "model.npz").unlink(),
    "truncated model.npz": lambda m: (m / "model.npz").write_bytes((m / "model.npz").read_bytes()[:3000]),
    "bit flip in model.npz": lambda m: _flip_middle(m / "model.npz"),
    "garbage model.json": lambda m: (m / "model.json").write_bytes(b"\x00\xffnot json"),
    "empty model.json": lambda m: (m / "model.json").write_text(""),
    "missing model.json": lambda m: (m / "model.json").unlink(),
    "other architecture": lambda m: (m / "model.json").write_text('{"hidden": [64, 32]}'),
}


@pytest.mark.slow
@needs_mirror
def test_damaged_model_files_give_one_line(repo):
    models = repo / "models"
    good = snapshot(repo, ["models"])
    before = snapshot(repo, OUTS["evaluate"])
    for case, damage in DAMAGE.items():
        damage(models)
        line = one_error_line(stage(repo, "evaluate"))
        assert line.startswith("error: models/model."), f"{case}: {line}"
        assert "pickle" not in line, f"{case}: {line}"
        assert snapshot(repo, OUTS["evaluate"]) == before, case
        for name, data in good.items():  # repair
            (repo / name).write_bytes(data)


@pytest.mark.slow
@needs_mirror
@pytest.mark.parametrize("damage", ["bit flip", "truncated"])
def test_a_corrupt_checkpoint_is_reported_and_training_starts_over(repo, damage):
    result = stage(repo, "train", LENET_TEST_FAULT="built:SIGKILL")  # leaves checkpoints/train.npz
    checkpoint = repo / "checkpoints/train.npz"
    assert result.returncode == -9 and checkpoint.exists()
    if damage == "bit flip":
        _flip_middle(checkpoint)
    else:
        checkpoint.write_bytes(checkpoint.read_bytes()[:-1000])
    result = stage(repo, "train")
    assert result.returncode == 0, result.stderr
    assert "ignoring checkpoints/train.npz: " in result.stderr and "starting over" in result.stderr
    assert "resuming" not in result.stderr and "Traceback" not in result.stderr
    assert status_after_rerun(repo) == {}  # started over: the very same model as before
    assert not checkpoint.exists()


@pytest.mark.slow
@needs_mirror
def test_read_only_metrics_directory_keeps_old_model_and_metrics(repo):
    before = snapshot(repo)
    set_params(repo, {"train.seed": 1})  # the new model would differ
    metrics = repo / "metrics"
    # Root writes through permission bits: make the directory immutable instead.
    protect, unprotect = ((["chattr", "+i", str(metrics)], ["chattr", "-i", str(metrics)]) if os.geteuid() == 0
                          else (["chmod", "a-w", str(metrics)], ["chmod", "u+w", str(metrics)]))
    if subprocess.run(protect, capture_output=True).returncode != 0:
        pytest.skip("cannot make metrics/ read-only here (chattr unsupported)")
    try:
        result = stage(repo, "train")
    finally:
        subprocess.run(unprotect, check=True)
    line = last_error_line(result)
    assert line.startswith("error: metrics: ") and "metrics/history.csv cannot be replaced" in line, line
    assert snapshot(repo) == before and stray_files(repo) == []


# --- training that learns nothing, params edited mid-run ---------------------------------------


@pytest.mark.slow
@needs_mirror
def test_chance_level_training_fails_and_keeps_the_previous_model(repo):
    before = snapshot(repo)
    set_params(repo, {"train.lr": 10.0, "train.activation": "sigmoid", "train.init": "randn"})
    line = last_error_line(stage(repo, "train"))
    assert line.startswith("error: training learned nothing: validation accuracy 0.1000 (kept epoch"), line
    assert "chance level" in line and "train.lr" in line
    assert snapshot(repo) == before and staging_areas(repo) == []


@pytest.mark.slow
@needs_mirror
def test_params_changed_while_a_stage_runs_are_never_recorded(repo):
    before, lock = snapshot(repo), (repo / "dvc.lock").read_bytes()
    process = subprocess.Popen(["dvc", "repro", "-f", "-s", "train"], cwd=repo,
                               env=environment(LENET_TEST_FAULT="begin:SIGSTOP"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = frozen_stage_pid(repo, "train")
    set_params(repo, {"train.lr": 0.01})  # as a refused `dvc exp run -S train.lr=0.01` does
    os.kill(pid, signal.SIGCONT)
    out, err = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "error: params.yaml changed while this stage ran; run again" in out + err
    assert (repo / "dvc.lock").read_bytes() == lock
    # DVC itself removed the cached models/ before running train; nothing new came in.
    after = snapshot(repo)
    assert all(after[name] == before[name] for name in after)
    assert staging_areas(repo) == []


# --- permissions and stable bytes ----------------------------------------------------------------


@pytest.mark.slow
@needs_mirror
def test_outputs_follow_the_umask(repo):
    for name in ("normalize", "train"):
        result = subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=repo, env=environment(),
                                capture_output=True, text=True, timeout=300, umask=0o027)
        assert result.returncode == 0, result.stderr
    for directory in ("data/prepared", "models"):
        assert (repo / directory).stat().st_mode & 0o777 == 0o750, directory
    for file in ("data/prepared/train.parquet", "models/model.npz", "models/model.json",
                 "models/preprocessing.json", "metrics/train.json", "metrics/history.csv"):
        assert (repo / file).stat().st_mode & 0o777 == 0o640, file


def test_model_bytes_do_not_depend_on_zipfile_defaults(monkeypatch):
    from nn.serialization import write_npz

    state = {"conv.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "conv.bias": np.zeros(2, np.float32)}
    buffer = io.BytesIO()
    write_npz(buffer, state)
    reference = buffer.getvalue()
    # Golden: any change to a header field (or to the layout) changes every model's DVC hash.
    assert hashlib.sha256(reference).hexdigest() == "bdc8a6c58d2a1e31a974b9f53748960beb13554ec5b4de39a46695b553bf05bf"
    # The defaults zipfile derives from the platform and its version constants.
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(zipfile, "DEFAULT_VERSION", 10)

    class Unseekable(io.RawIOBase):  # a pipe: zipfile would add data descriptors
        def __init__(self):
            self.data = b""

        def writable(self):
            return True

        def write(self, b):
            self.data += bytes(b)
            return len(b)

    sink = Unseekable()
    write_npz(sink, state)
    assert sink.data == reference


def test_atomic_write_leaves_no_temporary_file_when_interrupted_early(tmp_path, monkeypatch):
    from stages.common import outputs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.os, "chmod", interrupted)  # right after the file was made
    with pytest.raises(KeyboardInterrupt):
        with outputs.atomic_write(tmp_path / "out.json", "w") as handle:
            handle.write("never")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_leaves_each_output_wholly_old_or_wholly_new(tmp_path, monkeypatch):
    from stages.common import outputs

    monkeypatch.chdir(tmp_path)
    Path("models").mkdir()
    Path("models/model.npz").write_text("old model")
    Path("metrics").mkdir()
    Path("metrics/train.json").write_text("old metrics")
    real_rename = os.rename

    def failing_rename(src, dst):
        if str(dst) == "models" and "new" in str(src):
            raise PermissionError(13, "Permission denied", str(dst))
        real_rename(src, dst)

    with pytest.raises(PermissionError):
        with outputs.staged_outputs("train", ["metrics/train.json", "models"]) as staged:
            staged.path("models").mkdir()
            (staged.path("models") / "model.npz").write_text("new model")
            staged.path("metrics/train.json").write_text("new metrics")
            monkeypatch.setattr(outputs.os, "rename", failing_rename)
    assert Path("models/model.npz").read_text() == "old model"  # moved aside, then back
    assert Path("metrics/train.json").read_text() == "new metrics"  # replaced before the failure
    assert sorted(p.name for p in Path("models").iterdir()) == ["model.npz"]
    assert not Path(".stage-tmp").exists()
