"""Share and scale out: a real S3 remote (moto on 127.0.0.1), clones that push and pull,
experiments run on two "machines" and gathered on a third, and the faults a remote has.

One small pipeline (test_pipeline's SMALL, one epoch) is run once, in clone A, and pushed;
every other clone shares A's bare Git origin and the S3 bucket. Needs the test extras
(moto[server], dvc-s3) and the local MNIST mirror; skipped, visibly, without them.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.params_file import set_params
from tests.s3_server import S3Server, closed_port, s3  # noqa: F401 (s3 is a fixture)
from tests.mnist_mirror import MIRROR, needs_mirror
from tests.test_pipeline import ROOT, SMALL, stages_run
from tests.scratch_project import copy_project

pytestmark = [
    pytest.mark.slow,
    needs_mirror,
]

ONE_EPOCH = {**SMALL, "train.epochs": 1}
GIT_USER = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t"}


def environment(**extra: str) -> dict:
    """The subprocess environment: no AWS settings of this machine leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(GIT_USER, MNIST_MIRROR=str(MIRROR), AWS_EC2_METADATA_DISABLED="true",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    env.update(extra)
    return env


def credentials(s3: S3Server) -> dict:
    """The good credentials, as environment variables (how a CI job gets them)."""
    return {"AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key}


def run(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=root, env=env or environment(), capture_output=True, text=True)


def sh(root: Path, *args: str, env: dict | None = None) -> str:
    result = run(root, *args, env=env)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def clone(origin: Path, where: Path) -> Path:
    """A fresh ``git clone`` of the shared origin, as on another machine."""
    sh(where.parent, "git", "clone", "-q", str(origin), where.name)
    sh(where, "git", "config", "user.name", "t")  # dvc exp commits through its own Git backend
    sh(where, "git", "config", "user.email", "t@t")
    return where


def snapshot(root: Path) -> dict[str, str]:
    """Content hash of every file of a clone, its DVC cache included (not .git, not .dvc/tmp)."""
    skip = (root / ".git", root / ".dvc" / "tmp")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not any(p.is_relative_to(s) for s in skip)}


def corrupt_cache_files(root: Path) -> list[str]:
    """Files of DVC's cache (``files/md5/xx/yyyy``) whose MD5 is not their name."""
    cache = root / ".dvc" / "cache" / "files" / "md5"
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert files, f"no cache under {cache}"
    return [str(p) for p in files
            if hashlib.md5(p.read_bytes()).hexdigest() != (p.parent.name + p.name).removesuffix(".dir")]


def corrupt_remote_objects(s3: S3Server, prefix: str) -> list[str]:
    """Objects under ``prefix/files/md5/`` whose MD5 is not their key."""
    client, bad = s3.client(), []
    keys = s3.keys(f"{prefix}/files/md5/")
    assert keys, f"nothing under s3://{s3.bucket}/{prefix}"
    for key in keys:
        body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        expected = "".join(key.split("/")[-2:]).removesuffix(".dir")
        if hashlib.md5(body).hexdigest() != expected:
            bad.append(key)
    return bad


@pytest.fixture(scope="module")
def project(s3, tmp_path_factory):
    """Clone A after ``dvc repro``, the remote committed, credentials local, and ``dvc push --run-cache``.

    Returns paths ``a`` (clone A), ``origin`` (bare Git origin), ``tmp`` (room for more
    clones) and ``push`` (what the push printed).
    """
    tmp = tmp_path_factory.mktemp("remote")
    a = tmp / "a"
    a.mkdir()
    copy_project(a)
    set_params(a, ONE_EPOCH)
    sh(a, "git", "init", "-q")
    sh(a, "dvc", "remote", "add", "-d", "storage", f"s3://{s3.bucket}/project")
    sh(a, "dvc", "remote", "modify", "storage", "endpointurl", s3.endpoint)
    sh(a, "dvc", "remote", "modify", "--local", "storage", "access_key_id", s3.access_key_id)
    sh(a, "dvc", "remote", "modify", "--local", "storage", "secret_access_key", s3.secret_access_key)
    assert stages_run(sh(a, "dvc", "repro")) == {"fetch", "normalize", "train", "evaluate", "plot"}
    sh(a, "git", "add", "-A")  # dvc.lock and metrics/ are committed (main does the same)
    sh(a, "git", "commit", "-qm", "small run, S3 remote")
    origin = tmp / "origin.git"
    sh(tmp, "git", "clone", "-q", "--bare", str(a), origin.name)
    sh(a, "git", "remote", "add", "origin", str(origin))
    push = sh(a, "dvc", "push", "--run-cache")
    return SimpleNamespace(a=a, origin=origin, tmp=tmp, push=push)


def test_committed_config_names_the_remote_and_holds_no_credentials(project, s3):
    assert "files pushed" in project.push
    committed = sh(project.a, "git", "show", "HEAD:.dvc/config")
    assert f"url = s3://{s3.bucket}/project" in committed and f"endpointurl = {s3.endpoint}" in committed
    assert s3.access_key_id not in committed and s3.secret_access_key not in committed
    assert s3.secret_access_key in (project.a / ".dvc" / "config.local").read_text()
    sh(project.a, "git", "check-ignore", "-q", ".dvc/config.local")  # never committed
    tracked = sh(project.a, "git", "ls-files").split()
    assert "dvc.lock" in tracked and "metrics/train.json" in tracked


def test_a_fresh_clone_pulls_everything_and_has_nothing_to_run(project, s3):
    b = clone(project.origin, project.tmp / "b")
    env = environment(**credentials(s3))
    assert "files fetched" in sh(b, "dvc", "pull", env=env)
    assert "Data and pipelines are up to date" in sh(b, "dvc", "status", env=env)
    assert stages_run(sh(b, "dvc", "repro", env=env)) == set()
    for name in ("models/model.npz", "models/model.json", "data/prepared/train.parquet"):
        assert (b / name).read_bytes() == (project.a / name).read_bytes(), name
    assert corrupt_cache_files(b) == []


def test_experiments_run_on_two_machines_meet_on_a_third(project, s3):
    env = environment(**credentials(s3))
    runs = {"m1": 0.01, "m2": 0.03}
    for machine, lr in runs.items():
        root = clone(project.origin, project.tmp / machine)
        output = sh(root, "dvc", "exp", "run", "--pull", "--allow-missing", "-n", f"lr-{machine}",
                    "-S", f"train.lr={lr}", env=env)
        assert stages_run(output) == {"train", "evaluate", "plot"}  # fetch/normalize: from the remote
        assert f"Pushed experiment lr-{machine}" in sh(root, "dvc", "exp", "push", "origin", f"lr-{machine}", env=env)

    third = clone(project.origin, project.tmp / "m3")
    sh(third, "dvc", "exp", "pull", "origin", env=env)
    shown = json.loads(run(third, "dvc", "exp", "show", "--json", env=env).stdout)
    experiments = {exp["name"]: exp["revs"][0]["data"]
                   for commit in shown for exp in (commit.get("experiments") or [])}
    assert set(experiments) == {"lr-m1", "lr-m2"}
    for machine, lr in runs.items():
        data = experiments[f"lr-{machine}"]
        assert data["params"]["params.yaml"]["data"]["train"]["lr"] == lr
        assert data["params"]["params.yaml"]["data"]["train"]["epochs"] == 1
        evaluation = data["metrics"]["metrics/eval.json"]["data"]
        assert 0 < evaluation["test_accuracy"] <= 1
        assert data["metrics"]["metrics/train.json"]["data"]["best_epoch"] == 1


@pytest.mark.parametrize("fault", ["unreachable", "wrong credentials"])
def test_a_failing_remote_gives_one_error_and_changes_nothing(project, s3, fault, tmp_path):
    if fault == "unreachable":
        endpoint, env, expected = f"http://127.0.0.1:{closed_port()}", credentials(s3), "Could not connect to the endpoint URL"
    else:
        endpoint, expected = s3.endpoint, "Forbidden"
        env = {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0", "AWS_SECRET_ACCESS_KEY": "wrong"}
    fresh = clone(project.origin, tmp_path / "fresh")
    for root, command in ((project.a, "push"), (fresh, "pull")):
        sh(root, "dvc", "remote", "add", "--local", "-f", "faulty", f"s3://{s3.bucket}/project")
        sh(root, "dvc", "remote", "modify", "--local", "faulty", "endpointurl", endpoint)
        before = snapshot(root)
        # botocore's retries off: the outcome is the same, without waiting them out.
        result = run(root, "dvc", command, "-r", "faulty", env=environment(**env, AWS_MAX_ATTEMPTS="1"))
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        # The cause, named once; a pull adds one summary line ("N files failed to download").
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert sum(expected in line for line in errors) == 1 and len(errors) <= 2, result.stderr
        assert snapshot(root) == before, f"dvc {command} against a {fault} remote changed files"


def test_a_push_killed_halfway_then_rerun_completes(project, s3):
    a, prefix = project.a, "killed"
    sh(a, "dvc", "remote", "add", "--local", "-f", "killed", f"s3://{s3.bucket}/{prefix}")
    sh(a, "dvc", "remote", "modify", "--local", "killed", "endpointurl", s3.endpoint)
    env = environment(**credentials(s3))
    # One upload at a time, so the bucket fills object by object while we watch it.
    push = subprocess.Popen(["dvc", "push", "-r", "killed", "--run-cache", "-j", "1"], cwd=a, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not s3.keys(f"{prefix}/files/") and push.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert push.poll() is None, "the push ended before it could be killed"
    os.killpg(push.pid, signal.SIGKILL)
    assert push.wait() == -signal.SIGKILL
    halfway = set(s3.keys(f"{prefix}/"))
    assert halfway, "killed before anything was uploaded"

    assert "files pushed" in sh(a, "dvc", "push", "-r", "killed", "--run-cache", env=env)
    complete = set(s3.keys(f"{prefix}/"))
    assert halfway < complete, "the killed push had already uploaded everything"
    assert corrupt_remote_objects(s3, prefix) == []

    fresh = clone(project.origin, project.tmp / "after-kill")
    sh(fresh, "dvc", "remote", "add", "--local", "-f", "killed", f"s3://{s3.bucket}/{prefix}")
    sh(fresh, "dvc", "remote", "modify", "--local", "killed", "endpointurl", s3.endpoint)
    sh(fresh, "dvc", "pull", "-r", "killed", env=env)
    assert (fresh / "models/model.npz").read_bytes() == (a / "models/model.npz").read_bytes()
    assert "Data and pipelines are up to date" in sh(fresh, "dvc", "status", env=env)
    assert corrupt_cache_files(a) == [] and corrupt_cache_files(fresh) == []
