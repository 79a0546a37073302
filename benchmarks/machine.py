"""What a speed figure depends on: the CPU, its SIMD level, and the BLAS kernel each library runs.

Ratios between NumPy and PyTorch change with the CPU (an AVX-512 machine gives PyTorch's
oneDNN/MKL kernels and OpenBLAS's SkylakeX kernel different strengths than an AVX2 one), so
every benchmark prints these facts beside its figures.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

# From the widest down: the first one NumPy's dispatcher found names the machine's level.
SIMD_LEVELS = ("AVX512_SPR", "AVX512_ICL", "AVX512_CNL", "AVX512_SKX", "AVX512F", "AVX2", "AVX", "SSE42",
               "ASIMD", "NEON")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def numpy_simd() -> str:
    """The widest SIMD extension NumPy dispatches to on this CPU."""
    from numpy._core._multiarray_umath import __cpu_features__
    return next((level for level in SIMD_LEVELS if __cpu_features__.get(level)), "baseline")


def numpy_blas() -> dict:
    """The BLAS NumPy loaded and, through threadpoolctl when installed, the kernel it picked."""
    info: dict = {"coretype_override": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info.update(name=blas.get("name"), version=blas.get("version"),
                    kernel="unknown (pip install threadpoolctl to see it)")
        return info
    blas = next((lib for lib in threadpool_info() if lib.get("user_api") == "blas"), {})
    info.update(name=blas.get("internal_api"), version=blas.get("version"), kernel=blas.get("architecture"))
    return info


def torch_backend(torch) -> dict:
    """PyTorch's CPU capability (the kernels ATen dispatches to) and its math libraries."""
    return {"version": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": torch.backends.mkl.is_available(), "onednn": torch.backends.mkldnn.is_available()}


def machine() -> dict:
    """Everything above for NumPy, as one JSON-ready record."""
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "numpy_simd": numpy_simd(), "numpy_blas": numpy_blas()}
