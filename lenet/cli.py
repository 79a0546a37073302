"""The ``lenet`` console script: one Typer app, one sub-command per module of this package.

A command imports only its own module: ``lenet predict`` never loads matplotlib or DVC, so
it answers within a second of starting. All modules are imported only when no known
command is named (``lenet --help``, a typo), to list them.
"""

from __future__ import annotations

import importlib
import sys

import typer

from stages.common.cli import run

COMMANDS = {"predict": "lenet.predict", "serve": "lenet.serve", "report": "lenet.report", "studies": "lenet.studies"}


def _group() -> None:
    """Use and review the NumPy LeNet-5 pipeline (the stages run through `dvc repro`)."""


def build_app(args: list[str] = ()) -> typer.Typer:
    """The app with the sub-command ``args`` starts with, or with all of them if it names none."""
    app = typer.Typer(add_completion=False, no_args_is_help=True, callback=_group)
    for name in [args[0]] if args and args[0] in COMMANDS else COMMANDS:
        app.command(name)(importlib.import_module(COMMANDS[name]).main)
    return app


def main() -> None:
    """Entry point of the ``lenet`` console script (``pyproject.toml``)."""
    for stream in (sys.stdout, sys.stderr):  # text no escaping foresaw is shown, never a crash
        stream.reconfigure(errors="backslashreplace")
    run(build_app(sys.argv[1:]), report_time=False)


if __name__ == "__main__":
    main()
