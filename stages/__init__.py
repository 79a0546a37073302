"""The pipeline's stages, one Typer command each: ``python -m stages.<name>``."""

import os

# One BLAS thread unless the user asks otherwise. On 2 cores it is as fast as two for
# LeNet-5's small matrix products, and when anything else keeps a core busy, OpenBLAS's
# spinning threads made training 3-5x slower. Set before any stage imports NumPy.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
