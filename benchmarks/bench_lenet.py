"""Time one training epoch of the NumPy LeNet-5 against PyTorch and the naive loop layers.

Prints one JSON line per measurement (see benchmarks/README.md). Run from the repo root:

    /work/venv/bin/python benchmarks/bench_lenet.py                      # full epochs
    /work/venv/bin/python benchmarks/bench_lenet.py --epochs-fraction 0.1 # quick check

Everything is measured in this one process, one after the other, so the NumPy/PyTorch
ratio compares like with like even on a busy machine (absolute seconds do not).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

def _threads_flag() -> str | None:
    """``--threads N`` must act before NumPy loads OpenBLAS, so it is read here, early."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return None


if _threads_flag():
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads_flag()

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # nn/, stages/ and tests/reference_loops.py

import nn  # noqa: E402

TRAIN_IMAGES, TEST_IMAGES, EVAL_BATCH = 60_000, 10_000, 1000
LR, MOMENTUM = 0.01, 0.9


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def blas_threads() -> int:
    """Threads NumPy's OpenBLAS uses (asked through its C API), else the usual env/CPU default."""
    maps = Path("/proc/self/maps")
    libraries = {line.split()[-1] for line in maps.read_text().splitlines()} if maps.exists() else set()
    for path in sorted(p for p in libraries if "openblas" in p.lower() and ".so" in p):
        with contextlib.suppress(OSError):
            lib = ctypes.CDLL(path)
            for symbol in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                           "openblas_get_num_threads"):
                if hasattr(lib, symbol):
                    return int(getattr(lib, symbol)())
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return os.cpu_count() or 1


def load_data(rng: np.random.Generator):
    """Real prepared MNIST if the pipeline produced it, else random data of the same shape.

    Speed does not depend on the pixel values (no data-dependent branches in any layer
    except which element wins a max pool), so random data measures the same thing.
    """
    train_path, test_path = REPO / "data/prepared/train.parquet", REPO / "data/prepared/test.parquet"
    if train_path.exists() and test_path.exists():
        try:
            from stages.common.dataset import read_split
            train, test = read_split(train_path), read_split(test_path)
            return "mnist", train.images, train.labels, test.images, test.labels
        except Exception as error:  # fall back rather than fail a benchmark
            print(f"# could not read prepared MNIST ({error}); using random data", file=sys.stderr)
    x = rng.standard_normal((TRAIN_IMAGES, 1, 28, 28), dtype=np.float32)
    x_test = rng.standard_normal((TEST_IMAGES, 1, 28, 28), dtype=np.float32)
    return ("random", x, rng.integers(0, 10, TRAIN_IMAGES), x_test, rng.integers(0, 10, TEST_IMAGES))


def batches(n_images: int, batch: int, steps: int, rng: np.random.Generator):
    """Index arrays of ``steps`` full shuffled batches, as training draws them (a new
    permutation starts when one runs out, e.g. for the warm-up steps of a full epoch)."""
    epochs = -(-steps * batch // n_images)
    order = np.concatenate([rng.permutation(n_images) for _ in range(epochs)])
    return [order[i * batch:(i + 1) * batch] for i in range(steps)]


def make_sgd(model):
    params = dict(model.named_parameters())
    try:
        from nn.optim import SGD
        optimizer = SGD(params, lr=LR, momentum=MOMENTUM)
        return lambda: optimizer.step(dict(model.named_gradients()))
    except ImportError:  # plain SGD inline until nn/optim.py exists
        def step():
            for name, grad in model.named_gradients():
                params[name] -= np.float32(LR) * grad
        return step


def numpy_epoch(x, y, batch, steps, rng):
    """Seconds for ``steps`` training steps of the NumPy LeNet-5 (after 2 warm-up steps)."""
    model = nn.lenet5(rng=rng)
    model.input_grad = False  # images need no gradient (as in PyTorch)
    loss_fn, step = nn.SoftmaxCrossEntropy(), make_sgd(model)
    index = batches(len(x), batch, steps + 2, rng)
    for i, idx in enumerate(index):
        if i == 2:
            start = time.perf_counter()
        _, dlogits = loss_fn(model.forward(x[idx]), y[idx])
        model.backward(dlogits)
        step()
    return time.perf_counter() - start, model


def numpy_eval(model, x_test, n_batches):
    model.eval()
    model.forward(x_test[:EVAL_BATCH])  # warm-up: buffers for this batch size
    start = time.perf_counter()
    for i in range(n_batches):
        model.forward(x_test[i * EVAL_BATCH:(i + 1) * EVAL_BATCH]).argmax(axis=1)
    return time.perf_counter() - start


def torch_epoch(torch, x, y, batch, steps, rng):
    import torch.nn as tnn
    model = tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    tx, ty = torch.from_numpy(x), torch.from_numpy(np.asarray(y, dtype=np.int64))
    for i, idx in enumerate(batches(len(x), batch, steps + 2, rng)):
        if i == 2:
            start = time.perf_counter()
        idx = torch.from_numpy(idx)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(tx[idx]), ty[idx])
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        model(tx[:EVAL_BATCH])
        start = time.perf_counter()
        for i in range(TEST_IMAGES // EVAL_BATCH):
            model(tx[i * EVAL_BATCH:(i + 1) * EVAL_BATCH])
        eval_seconds = time.perf_counter() - start
    return elapsed, eval_seconds


def naive_seconds_per_image(x, y, n_images: int, rng) -> float | None:
    """Seconds per image of one forward+backward with tests/reference_loops.py (or None)."""
    try:
        from tests.reference_loops import naive_lenet_step
    except ImportError as error:
        print(f"# naive reference unavailable: {error}", file=sys.stderr)
        return None
    params = nn.lenet5(rng=rng).state_dict()
    half = max(1, n_images // 2)
    start = time.perf_counter()
    for b in range(2):  # two batches
        naive_lenet_step(params, x[b * half:(b + 1) * half], y[b * half:(b + 1) * half])
    return (time.perf_counter() - start) / (2 * half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs-fraction", type=float, default=1.0,
                        help="train on this fraction of an epoch and extrapolate (default 1)")
    parser.add_argument("--batch-sizes", default="64,256", help="comma-separated (default 64,256)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--naive-images", type=int, default=16,
                        help="images for the naive loop reference, in 2 batches (0 = skip)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads for NumPy and torch.set_num_threads (default: BLAS's "
                             "own default, all cores); 1 is steadier on a busy machine")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0 < args.epochs_fraction <= 1:
        parser.error("--epochs-fraction must be in (0, 1]")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    rng = np.random.default_rng(args.seed)
    source, x, y, x_test, y_test = load_data(rng)
    threads = blas_threads()
    emit({"what": "setup", "data": source, "train_images": len(x), "test_images": len(x_test),
          "epochs_fraction": args.epochs_fraction, "numpy": np.__version__, "blas_threads": threads,
          "cpus": os.cpu_count(), "python": platform.python_version(),
          "optimizer": f"SGD(lr={LR}, momentum={MOMENTUM})"})

    # All NumPy training first, then evaluation, then torch: ru_maxrss is a high-water mark,
    # so this order keeps the training figure free of eval's batch-1000 buffers and of torch.
    results, model = {}, None
    for batch in batch_sizes:
        steps = max(1, round(args.epochs_fraction * len(x) / batch))
        seconds, model = numpy_epoch(x, y, batch, steps, rng)
        epoch = seconds / (steps * batch) * len(x)
        results[batch] = {"what": "numpy", "batch": batch, "steps_timed": steps,
                          "seconds_per_epoch": round(epoch, 3),
                          "train_images_per_s": round(len(x) / epoch),
                          "peak_rss_mib_training": round(peak_rss_mib(), 1)}
        emit(results[batch])
    n_eval = max(1, round(args.epochs_fraction * len(x_test) / EVAL_BATCH))
    numpy_eval_rate = n_eval * EVAL_BATCH / numpy_eval(model, x_test, n_eval)
    emit({"what": "numpy_eval", "batch": EVAL_BATCH, "images_timed": n_eval * EVAL_BATCH,
          "eval_images_per_s": round(numpy_eval_rate), "peak_rss_mib": round(peak_rss_mib(), 1)})

    naive = naive_seconds_per_image(x, y, args.naive_images, rng) if args.naive_images else None
    if naive is not None:
        naive_epoch = naive * len(x)
        emit({"what": "naive", "images_timed": 2 * max(1, args.naive_images // 2),
              "seconds_per_epoch_extrapolated": round(naive_epoch, 1),
              **{f"naive_over_numpy_batch{b}": round(naive_epoch / r["seconds_per_epoch"], 1)
                 for b, r in results.items()}})

    if args.no_torch:
        return
    try:
        import torch
    except ImportError:
        emit({"what": "torch", "skipped": "torch is not importable"})
        return
    torch.set_num_threads(threads)
    for batch in batch_sizes:
        steps = max(1, round(args.epochs_fraction * len(x) / batch))
        seconds, eval_seconds = torch_epoch(torch, x, y, batch, steps, rng)
        epoch = seconds / (steps * batch) * len(x)
        numpy_epoch_s = results[batch]["seconds_per_epoch"]
        emit({"what": "torch", "batch": batch, "torch": torch.__version__, "threads": threads,
              "seconds_per_epoch": round(epoch, 3),
              "eval_images_per_s": round(TEST_IMAGES / eval_seconds),
              "numpy_over_torch": round(numpy_epoch_s / epoch, 3),
              "numpy_eval_over_torch_eval_speed": round(numpy_eval_rate * eval_seconds / TEST_IMAGES, 3)})


if __name__ == "__main__":
    main()
