"""Talk to DVC's experiment queue through its command line: queue, run, wait, read back.

Only DVC's documented commands are used (``dvc exp run --queue``, ``dvc queue start``,
``dvc queue status``, ``dvc queue logs``, ``dvc exp show --json``), so this keeps working
whatever DVC does inside. Wall-clock times are read from the runs' console logs, which DVC
keeps beside the queue, never from a tracked output (those hold no wall-clock values).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from stages.common.errors import LenetError

# The last line of `dvc queue status`: "Worker status: 1 active, 0 idle".
_WORKERS_LINE = re.compile(r"^Worker status: (?P<active>\d+) active, (?P<idle>\d+) idle")
# A task line of `dvc queue status`: "c1063d6  tut-a   08:53 AM   Success".
_TASK_LINE = re.compile(r"^(?P<task>[0-9a-f]{7,})\s+(?P<name>\S+)\s+.*?\s(?P<status>\w+)\s*$")
PENDING = ("Queued", "Running")
# The per-epoch console line of the train stage (stages/common/progress.py) ends in its time.
_EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): .*\|\s*([0-9.]+)s\s*$", re.MULTILINE)


def dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``dvc args``; on failure (with ``check``) raise one line naming the command."""
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        detail = next((line for line in message if line.strip()), f"exit code {result.returncode}")
        raise LenetError(f"{shlex.join(['dvc', *args[:3]])} ... failed: {detail.strip()}")
    return result


def start_queue(jobs: int = 1) -> None:
    """``dvc queue start -j jobs``.

    Its workers outlive it and inherit its output streams, so those go to a file: reading
    them through a pipe would wait for the whole queue.
    """
    with tempfile.TemporaryFile("w+") as output:
        code = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], stdin=subprocess.DEVNULL,
                              stdout=output, stderr=subprocess.STDOUT).returncode
        if code != 0:
            output.seek(0)
            lines = [line for line in output.read().splitlines() if line.strip()] or [f"exit code {code}"]
            raise LenetError(f"dvc queue start -j {jobs} failed: {lines[0].strip()}")


def queue_state() -> tuple[dict[str, tuple[str, str]], int]:
    """``dvc queue status``: ``({task id: (name, status)}, number of workers alive)``."""
    tasks, workers = {}, 0
    for line in dvc("queue", "status").stdout.splitlines():
        match = _TASK_LINE.match(line.strip())
        if match:
            tasks[match["task"]] = (match["name"], match["status"])
        workers_line = _WORKERS_LINE.match(line.strip())
        if workers_line:
            workers = int(workers_line["active"]) + int(workers_line["idle"])
    return tasks, workers


def queue_tasks() -> dict[str, tuple[str, str]]:
    """Every task of ``dvc queue status``: ``{task id: (name, status)}``."""
    return queue_state()[0]


def wait_for(names: list[str], old_tasks: set[str], poll: float) -> dict[str, str]:
    """Poll ``dvc queue status`` until the tasks named ``names`` have all finished.

    Each change of status is printed to stderr as it is seen.

    Parameters
    ----------
    names : list of str
    old_tasks : set of str
        Task ids queued before, which are not ours.
    poll : float
        Seconds between two polls.

    Returns
    -------
    dict of str to str
        ``{name: status}``.
    """
    seen: dict[str, str] = {}
    while True:
        tasks, workers = queue_state()
        ours = {name: status for task, (name, status) in tasks.items()
                if task not in old_tasks and name in names}
        missing = sorted(set(names) - set(ours))
        if missing:
            raise LenetError(f"dvc queue status does not list {', '.join(missing)}: "
                             "were they removed from the queue (dvc queue remove)?")
        for name in names:
            if seen.get(name) != ours[name]:
                print(f"{time.strftime('%H:%M:%S')} {name}: {ours[name]}", file=sys.stderr, flush=True)
        seen = ours
        if not any(status in PENDING for status in ours.values()):
            return ours
        if workers == 0 and "Running" not in ours.values():
            # DVC's file-based queue broker can stop its worker with runs still queued (a
            # message read while being written); the queued runs are intact, so start anew.
            print(f"{time.strftime('%H:%M:%S')} the queue worker stopped with runs still queued: "
                  "restarting it (dvc queue start)", file=sys.stderr, flush=True)
            start_queue()
        time.sleep(poll)


def epoch_seconds(name: str) -> float | None:
    """Mean wall-clock seconds of one training epoch (train + validation) of queued run ``name``.

    Read from its console log (``dvc queue logs``); None without one.
    """
    result = dvc("queue", "logs", name, check=False)
    seconds = [float(match[3]) for match in _EPOCH_LINE.finditer(result.stdout)]
    return sum(seconds) / len(seconds) if result.returncode == 0 and seconds else None


def log_tail(name: str, lines: int = 25) -> str:
    """The last ``lines`` lines of the queued run ``name``'s console log."""
    result = dvc("queue", "logs", name, check=False)
    return "\n".join((result.stdout + result.stderr).rstrip().splitlines()[-lines:])


@dataclass(frozen=True)
class Experiment:
    """One finished experiment as ``dvc exp show --json`` reports it."""

    name: str
    timestamp: str
    params: dict    # params.yaml, nested as in the file
    metrics: dict   # {metrics file: its values}


def experiments(all_commits: bool = False) -> dict[str, Experiment]:
    """Finished experiments with metrics, by name (the newest where a name repeats across baselines).

    From the HEAD baseline, or from every commit with ``all_commits``.
    """
    # A failed or queued run has no metrics of its own: DVC would show its baseline's.
    output = dvc("exp", "show", "--json", "--hide-failed", "--hide-queued",
                 *(["--all-commits"] if all_commits else [])).stdout
    found: dict[str, Experiment] = {}
    for baseline in json.loads(output):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                metrics = {path: entry["data"] for path, entry in (data.get("metrics") or {}).items()
                           if "data" in entry}
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                name = rev.get("name") or experiment.get("name")
                if not name or not metrics:
                    continue
                candidate = Experiment(name, data.get("timestamp") or "", params, metrics)
                if name not in found or candidate.timestamp > found[name].timestamp:
                    found[name] = candidate
    return found


def experiment_names() -> set[str]:
    """Names of every experiment of the HEAD baseline, queued, running or done."""
    names = set()
    for baseline in json.loads(dvc("exp", "show", "--json").stdout):
        for experiment in baseline.get("experiments") or []:
            names.add(experiment.get("name"))
            names.update(rev.get("name") for rev in experiment.get("revs") or [])
    return names - {None}
