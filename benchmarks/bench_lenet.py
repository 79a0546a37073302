"""Time one training epoch of the NumPy LeNet-5 against PyTorch and the naive loop layers.

Prints one JSON line per measurement (see benchmarks/README.md). Run from the repo root:

    python benchmarks/bench_lenet.py                      # full epochs
    python benchmarks/bench_lenet.py --epochs-fraction 0.1 # quick check
    python benchmarks/bench_lenet.py --workers 1           # one core each

NumPy and PyTorch are timed in this one process, in alternating rounds (NumPy, PyTorch,
NumPy, ...), so a machine that gets busier or quieter during the run slows both alike:
the NumPy/PyTorch ratio compares like with like even on a shared machine (absolute seconds
do not).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

# One BLAS thread per process, set before NumPy loads OpenBLAS: NumPy's cores come from
# worker processes (nn.DataParallel), one core each; more BLAS threads would fight over them.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # nn/ and stages/

import nn  # noqa: E402
from benchmarks.flops import multiply_adds  # noqa: E402
from benchmarks.machine import machine, torch_backend  # noqa: E402
from benchmarks.peak import matmul_peak_gflops  # noqa: E402
from nn.parallel import retain_freed_memory  # noqa: E402

TRAIN_IMAGES, TEST_IMAGES, EVAL_BATCH = 60_000, 10_000, 1000
LR, MOMENTUM = 0.01, 0.9


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def peak_rss_mib(model=None) -> float:
    """Peak resident set size of this process so far, plus that of ``model``'s worker
    processes when it is a running ``nn.DataParallel`` (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for pid in getattr(model, "worker_pids", []):
        status = Path(f"/proc/{pid}/status")
        if status.exists():
            kib += next(int(line.split()[1]) for line in status.read_text().splitlines()
                        if line.startswith("VmHWM:"))
    return kib / 1024


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


def batch_stream(n_images: int, batch: int, rng: np.random.Generator):
    """Endless shuffled batches of indices, as training draws them (a new permutation
    starts when one runs out)."""
    while True:
        order = rng.permutation(n_images)
        for start in range(0, n_images - batch + 1, batch):
            yield order[start:start + batch]


class NumpyRun:
    """The NumPy LeNet-5 (``nn.lenet5``) on ``workers`` processes, SGD with momentum."""

    @staticmethod
    def network(rng: np.random.Generator) -> nn.Sequential:
        model = nn.lenet5(rng=rng)
        model.input_grad = False  # images need no gradient (as in PyTorch)
        return model

    def __init__(self, x, y, batch: int, workers: int, rng: np.random.Generator):
        self.x, self.y, self.batches = x, y, batch_stream(len(x), batch, rng)
        self.model = nn.DataParallel(self.network(rng), workers)
        self.loss_fn = nn.SoftmaxCrossEntropy()
        self.optimizer = nn.SGD(dict(self.model.named_parameters()), lr=LR, momentum=MOMENTUM)

    def train(self, steps: int) -> float:
        """Seconds for ``steps`` training steps."""
        start = time.perf_counter()
        for _ in range(steps):
            idx = next(self.batches)
            self.model.forward_backward(self.x[idx], self.y[idx], self.loss_fn)
            self.optimizer.step(dict(self.model.named_gradients()))
        return time.perf_counter() - start

    def evaluate(self, x_test, n_batches: int) -> float:
        """Seconds to predict ``n_batches`` test batches in eval mode."""
        self.model.eval()
        start = time.perf_counter()
        for i in range(n_batches):
            self.model.forward(x_test[i * EVAL_BATCH:(i + 1) * EVAL_BATCH]).argmax(axis=1)
        elapsed = time.perf_counter() - start
        self.model.train()
        return elapsed

    def close(self) -> None:
        self.model.close()


class TorchRun:
    """The same network and optimizer in PyTorch."""

    def __init__(self, torch, x, y, batch: int, rng: np.random.Generator):
        import torch.nn as tnn
        self.torch = torch
        self.model = tnn.Sequential(
            tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
            tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.batches = batch_stream(len(x), batch, rng)

    def train(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            idx = self.torch.from_numpy(next(self.batches))
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.torch.nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - start

    def evaluate(self, x_test, n_batches: int) -> float:
        self.model.eval()
        tx = self.torch.from_numpy(x_test)
        with self.torch.no_grad():
            start = time.perf_counter()
            for i in range(n_batches):
                self.model(tx[i * EVAL_BATCH:(i + 1) * EVAL_BATCH]).argmax(dim=1)
            elapsed = time.perf_counter() - start
        self.model.train()
        return elapsed

    def close(self) -> None:
        pass


def alternate(runs: list, work, total: int, rounds: int) -> list[float]:
    """Seconds each run takes for ``total`` units of ``work(run, units)``, done in ``rounds``
    alternating slices (run 1, run 2, run 1, ...)."""
    seconds = [0.0] * len(runs)
    for r in range(rounds):
        units = total * (r + 1) // rounds - total * r // rounds
        for i, run in enumerate(runs):
            seconds[i] += work(run, units) if units else 0.0
    return seconds


def naive_seconds_per_image(x, y, n_images: int, rng) -> float | None:
    """Seconds per image of one forward+backward with nn/reference.py (or None)."""
    try:
        from nn.reference import naive_lenet_step
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
    parser.add_argument("--batch-sizes", default="32,64,256", help="comma-separated (default 32,64,256)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="cores for each library: NumPy's nn.DataParallel processes (one "
                             "BLAS thread each) and torch.set_num_threads (default: all CPUs)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating NumPy/PyTorch slices each measurement is split into")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--naive-images", type=int, default=16,
                        help="images for the naive loop reference, in 2 batches (0 = skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0 < args.epochs_fraction <= 1:
        parser.error("--epochs-fraction must be in (0, 1]")
    if args.workers < 1 or args.rounds < 1:
        parser.error("--workers and --rounds must be >= 1")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    retain_freed_memory()  # as the train stage does (the workers do it themselves)
    rng = np.random.default_rng(args.seed)
    source, x, y, x_test, y_test = load_data(rng)
    emit({"what": "setup", "data": source, "train_images": len(x), "test_images": len(x_test),
          "epochs_fraction": args.epochs_fraction, "numpy": np.__version__, "workers": args.workers,
          "rounds": args.rounds, "cpus": os.cpu_count(), "python": platform.python_version(),
          "optimizer": f"SGD(lr={LR}, momentum={MOMENTUM})"})
    emit({"what": "machine", **machine()})
    # The hardware's limit, measured before any training process runs: FLOP/s below are
    # given as a fraction of it.
    peak = matmul_peak_gflops(args.workers)
    emit({"what": "peak", **peak})
    step_flops = 2 * multiply_adds(NumpyRun.network(np.random.default_rng(0)))["step"]
    emit({"what": "flops", "network": "nn.lenet5()", "gflop_per_epoch": round(step_flops * len(x) / 1e9, 1),
          "mflop_per_image": round(step_flops / 1e6, 3)})

    def achieved(seconds_per_epoch: float) -> dict:
        gflops = step_flops * len(x) / seconds_per_epoch / 1e9
        return {"gflop_per_s": round(gflops, 1), "fraction_of_peak": round(gflops / peak["peak_gflops"], 3)}

    # NumPy warm-up before PyTorch is imported, so peak memory is NumPy's own: the first
    # steps allocate every buffer training and evaluation will ever use.
    numpy_runs, rss = {}, {}
    for batch in batch_sizes:
        numpy_runs[batch] = NumpyRun(x, y, batch, args.workers, rng)
        numpy_runs[batch].train(2)
        rss[batch] = peak_rss_mib(numpy_runs[batch].model)
    eval_run = numpy_runs[batch_sizes[0]]
    eval_run.evaluate(x_test, 1)
    rss_eval = peak_rss_mib(eval_run.model)

    naive = naive_seconds_per_image(x, y, args.naive_images, rng) if args.naive_images else None

    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.workers)
            emit({"what": "torch_backend", **torch_backend(torch)})
        except ImportError:
            emit({"what": "torch", "skipped": "torch is not importable"})

    numpy_epochs = {}
    for batch in batch_sizes:
        steps = max(1, round(args.epochs_fraction * len(x) / batch))
        runs = [numpy_runs[batch]]
        if torch is not None:
            runs.append(TorchRun(torch, x, y, batch, rng))
            runs[1].train(2)  # warm-up
        seconds = alternate(runs, lambda run, n: run.train(n), steps, args.rounds)
        epochs = [s / (steps * batch) * len(x) for s in seconds]
        numpy_epochs[batch] = epochs[0]
        emit({"what": "numpy", "batch": batch, "workers": args.workers, "steps_timed": steps,
              "seconds_per_epoch": round(epochs[0], 3), "train_images_per_s": round(len(x) / epochs[0]),
              **achieved(epochs[0]),
              "peak_rss_mib_training": round(rss[batch], 1)})
        if torch is not None:
            emit({"what": "torch", "batch": batch, "torch": torch.__version__, "threads": args.workers,
                  "seconds_per_epoch": round(epochs[1], 3), **achieved(epochs[1]),
                  "numpy_over_torch": round(epochs[0] / epochs[1], 3)})
            runs[1].close()
        if batch != batch_sizes[0]:
            numpy_runs[batch].close()

    n_eval = max(1, round(args.epochs_fraction * len(x_test) / EVAL_BATCH))
    runs = [eval_run]
    if torch is not None:
        runs.append(TorchRun(torch, x, y, batch_sizes[0], rng))
        runs[1].evaluate(x_test, 1)  # warm-up
    seconds = alternate(runs, lambda run, n: run.evaluate(x_test, n), n_eval, args.rounds)
    rates = [n_eval * EVAL_BATCH / s for s in seconds]
    record = {"what": "eval", "batch": EVAL_BATCH, "images_timed": n_eval * EVAL_BATCH,
              "numpy_eval_images_per_s": round(rates[0]), "peak_rss_mib": round(rss_eval, 1)}
    if torch is not None:
        record.update(torch_eval_images_per_s=round(rates[1]),
                      numpy_eval_over_torch_eval_speed=round(rates[0] / rates[1], 3))
    emit(record)
    eval_run.close()

    if naive is not None:
        naive_epoch = naive * len(x)
        emit({"what": "naive", "images_timed": 2 * max(1, args.naive_images // 2),
              "seconds_per_epoch_extrapolated": round(naive_epoch, 1),
              **{f"naive_over_numpy_batch{b}": round(naive_epoch / e, 1) for b, e in numpy_epochs.items()}})


if __name__ == "__main__":
    main()
