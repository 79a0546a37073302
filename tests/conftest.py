"""Test-wide settings, applied before NumPy is first imported, and the fixtures every module shares."""

import os

# The tests multiply small matrices, where BLAS threads only add overhead; on a busy
# 2-core machine two spinning BLAS threads made some tests 50x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.mnist_mirror import MIRROR, NO_MIRROR  # noqa: E402 (it imports no NumPy)


@pytest.fixture(scope="session")
def mnist_mirror() -> Path:
    """The directory of the four MNIST ``.gz`` files (``tests/mnist_mirror.py`` says where it
    looks: ``$MNIST_MIRROR``, ``../shared/mnist``, the verified ``data/raw/``); a test that
    asks for it is skipped, saying how to provide them, when there is none.

    Modules that need the files throughout skip with ``tests.mnist_mirror.needs_mirror`` instead.
    """
    if MIRROR is None:
        pytest.skip(NO_MIRROR)
    return MIRROR
