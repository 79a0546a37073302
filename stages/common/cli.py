"""The one error boundary of every stage (and of the ``lenet`` command): how a run ends.

Exit 0 (and ``<stage>: done in 1.2 s``) only when the command returned normally; Ctrl-C,
SIGTERM, SIGHUP: ``<stage>: interrupted (SIGINT)``, 128 + the signal; an expected failure
(LenetError, OSError): one line ``error: ...``, exit 1; Typer's usage errors, exit 2. What a
user sees for each fault: docs/faults.md. ``LENET_DEBUG=1`` prints the full traceback of an
unexpected error (or of any error) instead of one line.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

import typer

from stages.common.errors import LenetError, first_line

DEBUG_ENV = "LENET_DEBUG"
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """Raised in the main thread when a handled signal arrives.

    A ``BaseException`` but not a ``KeyboardInterrupt``, so that neither ``except Exception``
    in library code nor Typer's own Ctrl-C handling (which turns it into a return value)
    swallows it before it reaches :func:`run`.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def _error_line(error: Exception) -> str:
    """Ours as it is; an OSError as ``<path>: <reason>`` (both paths for a rename); anything else with a hint."""
    if isinstance(error, LenetError):
        return str(error)
    if isinstance(error, OSError):
        paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
        return f"{paths}: {error.strerror or error}" if paths else error.strerror or str(error)
    return f"unexpected {type(error).__name__}: {first_line(error)} (rerun with {DEBUG_ENV}=1 to see the traceback)"


def run(app: typer.Typer, *, report_time: bool = True) -> None:
    """Invoke ``app`` and end the process as this module's docstring says; never returns.

    Parameters
    ----------
    app : typer.Typer
    report_time : bool, default True
        ``False`` drops the success line: a stage's time belongs in a ``dvc repro`` log, but
        a command whose output people read (``lenet predict``) ends on its results.
    """
    name = Path(sys.argv[0]).stem  # python -m stages.train: .../stages/train.py -> train
    started = time.perf_counter()
    for signum in HANDLED_SIGNALS:  # so that ``finally`` blocks run
        signal.signal(signum, _raise_interrupted)
    try:
        # Typer returns an exit code instead of raising when it stopped early: --help (0),
        # Ctrl-C caught by Typer itself (130), an explicit typer.Exit. None means the command ran.
        result = app(standalone_mode=False)
    except Interrupted as interruption:
        result = 128 + interruption.signum
    except typer.TyperException as error:  # usage errors (bad options) format themselves
        error.show()
        raise SystemExit(error.exit_code) from None
    except Exception as error:  # noqa: BLE001 - the boundary: one line, the traceback on demand
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            traceback.print_exc()
        print(f"error: {_error_line(error)}", file=sys.stderr)
        raise SystemExit(1) from None
    if result is None:
        if report_time:
            print(f"{name}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        raise SystemExit(0)
    if result - 128 in HANDLED_SIGNALS:
        print(f"{name}: interrupted ({signal.Signals(result - 128).name})", file=sys.stderr)
    raise SystemExit(result)
