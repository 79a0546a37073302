"""Where the tests find the real MNIST files: the one definition every test module imports.

In order: ``$MNIST_MIRROR`` (a directory of the four ``.gz`` files), ``../shared/mnist``
beside the repository, or — after a ``dvc repro`` — the fetch stage's verified files in
``data/raw/``, gzipped once into ``.pytest_cache/mnist-mirror/`` so they serve as a mirror.
``MIRROR`` is None when none of them holds the files; tests that need them skip, saying so.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
RAW = ROOT / "data" / "raw"
FROM_RAW = ROOT / ".pytest_cache" / "mnist-mirror"


def _complete(directory: Path) -> bool:
    return all((directory / f"{name}.gz").is_file() for name in NAMES)


def _gzipped_raw() -> Path | None:
    """``data/raw``'s verified files as a mirror directory, made once (a second or two)."""
    if not all((RAW / name).is_file() for name in NAMES):
        return None
    if not _complete(FROM_RAW):
        FROM_RAW.mkdir(parents=True, exist_ok=True)
        for name in NAMES:
            partial = FROM_RAW / f".{name}.gz.partial"
            partial.write_bytes(gzip.compress((RAW / name).read_bytes(), compresslevel=1, mtime=0))
            partial.replace(FROM_RAW / f"{name}.gz")  # complete files only: another run may read them
    return FROM_RAW


def find_mirror() -> Path | None:
    """The first place that holds all four MNIST ``.gz`` files, or None."""
    candidates = [Path(os.environ["MNIST_MIRROR"])] if os.environ.get("MNIST_MIRROR") else []
    candidates.append(ROOT.parent / "shared" / "mnist")
    for candidate in candidates:
        if _complete(candidate):
            return candidate.resolve()
    return _gzipped_raw()


MIRROR = find_mirror()
NO_MIRROR = ("no MNIST files: set MNIST_MIRROR to a directory of the four .gz files, put them in "
             "../shared/mnist, or run `dvc repro` once (its data/raw serves too)")
needs_mirror = pytest.mark.skipif(MIRROR is None, reason=NO_MIRROR)
