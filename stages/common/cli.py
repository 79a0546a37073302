"""Run a stage's Typer app so that expected failures end in one clear line, not a traceback."""

import sys

import typer

from stages.common.errors import StageError


def run(app: typer.Typer) -> None:
    """Invoke ``app``; a :class:`StageError` prints ``error: <message>`` and exits with 1."""
    try:
        app(standalone_mode=False)
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except typer.Exit as exit_:
        raise SystemExit(exit_.exit_code) from None
    except Exception as error:  # click usage errors (bad options) have their own formatting
        import click

        if isinstance(error, click.ClickException):
            error.show()
            raise SystemExit(error.exit_code) from None
        raise
