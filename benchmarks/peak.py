"""The machine's float32 matrix-product peak, as our training processes can reach it.

One large ``np.matmul`` per process, one BLAS thread each, all processes at once: the
arrangement ``nn.DataParallel`` trains in (one core per process). A square product of
``SIZE`` is far larger than any of LeNet-5's and runs at the BLAS kernel's best, so its
rate is the most a step's products could reach on these cores. Spawned processes inherit
the caller's environment: set ``OPENBLAS_NUM_THREADS=1`` before calling.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np

SIZE = 2048  # 3 x 16 MB of float32 per process; 17 GFLOP per product
ROUNDS = 5  # products per process, each round started together; the best round counts


def _products(size: int, rounds: int, barrier, results) -> None:
    """One process: ``rounds`` timed products, each started at the barrier with the others."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty((size, size), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm-up: pages touched, kernel chosen
    seconds = []
    for _ in range(rounds):
        barrier.wait()
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        seconds.append(time.perf_counter() - start)
    results.put(seconds)


def matmul_peak_gflops(workers: int, size: int = SIZE, rounds: int = ROUNDS) -> dict:
    """GFLOP/s of ``workers`` processes each multiplying two ``size x size`` float32 matrices.

    Parameters
    ----------
    workers : int
        Processes, all computing at once (one core each).
    size : int, default SIZE
    rounds : int, default ROUNDS
        Products per process; in each round all start together.

    Returns
    -------
    dict
        ``peak_gflops``: the best round's total rate, ``2 * size**3 * workers`` FLOP over the
        slowest process's time in that round; ``per_process_gflops``: that rate / workers;
        ``size``, ``workers``, ``rounds``.
    """
    context = multiprocessing.get_context("spawn")  # a clean interpreter, like DataParallel's
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_products, args=(size, rounds, barrier, results)) for _ in range(workers)]
    for process in processes:
        process.start()
    seconds = [results.get() for _ in processes]
    for process in processes:
        process.join()
    slowest = [max(times) for times in zip(*seconds)]  # per round
    peak = 2 * size ** 3 * workers / min(slowest) / 1e9
    return {"peak_gflops": round(peak, 1), "per_process_gflops": round(peak / workers, 1),
            "size": size, "workers": workers, "rounds": rounds}
