"""DVC's experiments through its documented, machine-readable interfaces: queue, run, wait, read back.

Runs are queued with ``dvc exp run --queue`` and run by ``dvc queue start``; everything
about them is read from ``dvc exp show --json`` (typed params and metrics, and each run's
state), their files with ``dvc.api.read``, and their console output with ``dvc queue logs``.
Never DVC's tables for people, whose layout may change. Wall-clock times and memory come
from the runs' console logs, which DVC keeps beside the queue, never from a tracked output
(those hold no values that change from run to run).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from stages.common.errors import LenetError
from stages.common.paths import HISTORY
from stages.common.progress import EPOCH_LINE, MEMORY_LINE

PENDING = ("queued", "running")
DONE, FAILED = "done", "failed"
FAILED_LOOKS = 3  # consecutive failures of dvc exp show before waiting gives up
# dvc exp show has been seen to hang for good (asleep in a futex, in CI) while a queued run's
# temporary copy vanished under it; it answers in seconds otherwise. A look that takes this
# long is abandoned (the process killed) and counts as a failed one.
LOOK_SECONDS = 120


def dvc(*args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``dvc args``, raising one line that names the command if it fails or hangs.

    A run still going after ``timeout`` seconds is killed.

    Parameters
    ----------
    *args : str
        The arguments after ``dvc``.
    check : bool, default True
        Raise on a non-zero exit.
    timeout : float, optional
        Seconds to wait for it; no limit by default.

    Returns
    -------
    subprocess.CompletedProcess
        With its output as text.
    """
    try:
        result = subprocess.run(["dvc", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LenetError(f"{shlex.join(['dvc', *args[:3]])} ... did not answer in {timeout:g} s") from None
    if check and result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        detail = next((line for line in message if line.strip()), f"exit code {result.returncode}")
        raise LenetError(f"{shlex.join(['dvc', *args[:3]])} ... failed: {detail.strip()}")
    return result


def start_queue(jobs: int = 1) -> None:
    """``dvc queue start -j jobs``: starts the workers not yet running (none if all are).

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


@dataclass(frozen=True)
class Experiment:
    """One experiment as ``dvc exp show --json`` reports it."""

    name: str
    rev: str        # its commit, for dvc.api.read
    state: str      # "queued", "running", "failed" or "done"
    timestamp: str
    params: dict    # params.yaml, nested as in the file
    metrics: dict   # {metrics file: its values}; empty unless done


def _state(executor: dict | None) -> str:
    """A run's state from its ``executor`` entry: none, or "success", once it is done."""
    state = (executor or {}).get("state") or "success"
    return DONE if state == "success" else state


def commit_of(rev: str) -> str:
    """The commit ``rev`` names now (experiments hang off their baseline commit, not a branch)."""
    result = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise LenetError(f"--rev {rev}: not a commit of this repository")
    return result.stdout.strip()


def experiments(rev: str = "HEAD", num: int = 1) -> dict[str, Experiment]:
    """Experiments of baseline ``rev`` and the ``num - 1`` first-parent commits before it, by name.

    Where a name repeats (a failed run queued again, or the same name on two baselines) the
    newest entry wins. A run that is not done has no metrics of its own (DVC would show its
    baseline's), so they are left out.
    """
    output = dvc("exp", "show", "--json", "--rev", rev, "-n", str(num), timeout=LOOK_SECONDS).stdout
    found: dict[str, Experiment] = {}
    for baseline in json.loads(output):
        for experiment in baseline.get("experiments") or []:
            state = _state(experiment.get("executor"))
            for entry in experiment.get("revs") or []:
                data = entry.get("data") or {}
                name = entry.get("name") or experiment.get("name")
                if not name:
                    continue
                metrics = {path: values["data"] for path, values in (data.get("metrics") or {}).items()
                           if "data" in values} if state == DONE else {}
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                candidate = Experiment(name, entry.get("rev") or "", state, data.get("timestamp") or "",
                                       params, metrics)
                if name not in found or candidate.timestamp >= found[name].timestamp:
                    found[name] = candidate
    return found


def wait_for(names: list[str], poll: float, rev: str = "HEAD") -> dict[str, str]:
    """Poll ``dvc exp show --json`` until the runs ``names`` are neither queued nor running.

    Each change of state is printed to stderr as it is seen. When runs wait and none runs,
    ``dvc queue start -j 1`` is called again: DVC's file-based queue broker can stop its
    worker with runs still queued, and starting one when one runs does nothing. A look that
    fails or hangs (seen: a run's temporary copy vanishing under ``dvc exp show``) is retried.

    Parameters
    ----------
    names : list of str
    poll : float
        Seconds between two looks.
    rev : str, default "HEAD"
        The baseline the runs were queued on (a commit: HEAD may move meanwhile).

    Returns
    -------
    dict of str to str
        ``{name: state}``, each "done" or "failed".
    """
    seen: dict[str, str] = {}
    failures = 0
    while True:
        try:
            found = experiments(rev)
        except LenetError as error:  # DVC can trip over a run's temporary copy as it comes or goes
            failures += 1
            if failures >= FAILED_LOOKS:
                raise
            print(f"{time.strftime('%H:%M:%S')} {error}; looking again", file=sys.stderr, flush=True)
            time.sleep(poll)
            continue
        failures = 0
        missing = sorted(set(names) - set(found))
        if missing:
            raise LenetError(f"dvc exp show does not list {', '.join(missing)}: "
                             "were they removed from the queue (dvc queue remove)?")
        states = {name: found[name].state for name in names}
        for name in names:
            if seen.get(name) != states[name]:
                print(f"{time.strftime('%H:%M:%S')} {name}: {states[name]}", file=sys.stderr, flush=True)
        seen = states
        if not any(state in PENDING for state in states.values()):
            return states
        if "running" not in states.values():
            start_queue()
        time.sleep(poll)


def log(name: str) -> str | None:
    """The console output of queued run ``name`` (``dvc queue logs``), or None without one."""
    result = dvc("queue", "logs", name, check=False)
    return result.stdout if result.returncode == 0 else None


def epoch_seconds(console: str | None) -> list[float]:
    """Wall-clock seconds of each training epoch (train + validation) in a train stage's output."""
    return [float(match[3]) for match in EPOCH_LINE.finditer(console or "")]


def peak_memory_mib(console: str | None) -> int | None:
    """The train stage's peak memory (train process and workers) from its output; None without."""
    matches = MEMORY_LINE.findall(console or "")
    return int(matches[-1]) if matches else None


def history(experiment: Experiment) -> str:
    """The experiment's metrics/history.csv, as committed in it."""
    import dvc.api  # imported here: it takes a second, and only figures need it

    return dvc.api.read(HISTORY.as_posix(), rev=experiment.rev)
