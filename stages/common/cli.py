"""Run a stage's Typer app so that expected failures end in one clear line, not a traceback."""

import sys
import time
from pathlib import Path

import click
import typer

from stages.common.errors import StageError


def run(app: typer.Typer) -> None:
    """Invoke ``app``; a :class:`StageError` prints ``error: <message>`` and exits with 1.

    On success the stage's wall-clock time is printed, so a ``dvc repro`` log shows where the
    minutes go.
    """
    started = time.perf_counter()
    try:
        app(standalone_mode=False)
        print(f"{Path(sys.argv[0]).stem}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except typer.Exit as exit_:
        raise SystemExit(exit_.exit_code) from None
    except click.ClickException as error:  # usage errors (bad options) format themselves
        error.show()
        raise SystemExit(error.exit_code) from None
