"""The ``lenet`` console script: one Typer app, one sub-command per module of this package."""

from __future__ import annotations

import typer

from lenet import predict, report, serve, studies
from stages.common.cli import run

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Use and review the NumPy LeNet-5 pipeline (the stages run through `dvc repro`).")
app.command("predict")(predict.main)
app.command("serve")(serve.main)
app.command("report")(report.main)
app.command("studies")(studies.main)


def main() -> None:
    """Entry point of the ``lenet`` console script (``pyproject.toml``)."""
    run(app, report_time=False)


if __name__ == "__main__":
    main()
