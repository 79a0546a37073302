""".github/workflows/sweep.yaml cannot run here: check its structure, the DVC commands it
runs (each exists with each option it passes); tests/test_workflows.py checks its schema.
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "sweep.yaml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return YAML(typ="safe", pure=True).load(WORKFLOW.read_text())  # YAML 1.2: `on` stays a string


def run_lines(job: dict) -> list[str]:
    """Every shell line of a job, continuation lines joined."""
    text = "\n".join(step["run"] for step in job["steps"] if "run" in step)
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def dvc_commands(workflow: dict) -> list[list[str]]:
    return [shlex.split(line.split("#")[0]) for job in workflow["jobs"].values()
            for line in run_lines(job) if line.startswith("dvc ")]


def test_dispatched_by_hand_with_a_json_list_of_learning_rates(workflow):
    assert set(workflow["on"]) == {"workflow_dispatch"}
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    rates = json.loads(inputs["lr"]["default"])
    assert isinstance(rates, list) and rates and all(isinstance(r, (int, float)) and r > 0 for r in rates)


def test_one_experiment_per_matrix_job_each_pushed(workflow):
    job = workflow["jobs"]["experiment"]
    assert job["strategy"]["matrix"]["lr"] == "${{ fromJSON(inputs.lr) }}"
    assert job["env"]["LR"] == "${{ matrix.lr }}"
    lines = run_lines(job)
    run = next(line for line in lines if line.startswith("dvc exp run"))
    assert "--pull" in run and "--allow-missing" in run and '-S "train.lr=$LR"' in run
    assert '-n "$NAME"' in run and any(line == 'dvc exp push origin "$NAME"' for line in lines)
    assert "${{ github.run_number }}" in job["env"]["NAME"]  # a second sweep never clashes


def test_the_last_job_gathers_every_experiment_into_the_summary(workflow):
    job = workflow["jobs"]["table"]
    assert job["needs"] == "experiment"
    text = " ".join(run_lines(job))
    assert "dvc exp pull --no-cache origin" in text
    assert "dvc exp show --md" in text and '>> "$GITHUB_STEP_SUMMARY"' in text


def test_the_table_columns_exist(workflow):
    show = next(cmd for cmd in dvc_commands(workflow) if cmd[:3] == ["dvc", "exp", "show"])
    columns = show[show.index("--keep") + 1].split("|")
    params = YAML(typ="safe", pure=True).load((ROOT / "params.yaml").read_text())
    stage_sources = "".join(p.read_text() for p in (ROOT / "stages").rglob("*.py"))
    for column in columns:
        name = column.replace("\\.", ".")
        if name == "Experiment":
            continue
        if "." in name:  # a param: a key of params.yaml
            section, key = name.split(".")
            assert key in params[section], f"{name} is not in params.yaml"
        else:  # a metric: a key some stage writes
            assert f'"{name}"' in stage_sources, f"no stage writes the metric {name}"


def test_credentials_come_from_secrets_as_environment_only(workflow):
    assert workflow["env"]["AWS_ACCESS_KEY_ID"] == "${{ secrets.AWS_ACCESS_KEY_ID }}"
    assert workflow["env"]["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"
    for job in workflow["jobs"].values():
        for line in run_lines(job):
            assert "secrets." not in line and "AWS_" not in line, line  # never written to a file
            assert not re.search(r"dvc remote (add|modify)", line), line


@pytest.mark.slow
def test_every_dvc_command_exists_with_every_option_it_passes(workflow):
    commands = dvc_commands(workflow)
    assert len(commands) >= 4
    dvc = str(Path(sys.executable).parent / "dvc")
    for command in commands:
        words = [w for w in command[1:] if not w.startswith("-")]
        sub = words[:2] if words[0] == "exp" else words[:1]
        result = subprocess.run([dvc, *sub, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, f"dvc {' '.join(sub)}: {result.stderr}"
        for option in (w for w in command if w.startswith("-")):
            assert re.search(rf"(^|[\s\[,]){re.escape(option)}\b", result.stdout), \
                f"dvc {' '.join(sub)} has no option {option}"

