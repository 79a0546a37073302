"""Test-wide settings, applied before NumPy is first imported."""

import os

# The tests multiply small matrices, where BLAS threads only add overhead; on a busy
# 2-core machine two spinning BLAS threads made some tests 50x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
