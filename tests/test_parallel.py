"""nn.DataParallel: the same numbers as the wrapped model, reproducibly, and clean failures."""

import os
import signal
import time

import numpy as np
import pytest

import nn
from nn.parallel import BOX_BYTES, DataParallel, WorkerError, retain_freed_memory, split
from tests.synthetic import mnist_like


def lenet(seed=0, **kwargs):
    return nn.lenet5(rng=np.random.default_rng(seed), **kwargs)


def tie_free_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` float64 1x28x28 images of continuous noise.

    A shard and the whole batch are computed by products of other sizes, which may round
    the same output pixel differently in its last bit. On MNIST-like images whole windows
    tie exactly, and that last bit then decides which one a max pool's gradient goes to:
    two correct gradients, far apart. Continuous noise has no ties, so the comparisons below
    test the sharding, not the tie-breaking (which tests/test_torch_parity.py checks).
    """
    return rng.standard_normal((n, 1, 28, 28))


def step(model, x, labels):
    """One forward/backward: (logits, dx, {name: grad copy})."""
    logits = model.forward(x)
    _, dlogits = nn.SoftmaxCrossEntropy()(logits, labels)
    dx = model.backward(dlogits)
    return logits, dx, {name: grad.copy() for name, grad in model.named_gradients()}


@pytest.fixture(scope="module")
def float64_pair():
    """A float64 LeNet-5 and a 3-worker DataParallel around an identical copy."""
    reference = lenet(dtype=np.float64)
    parallel = DataParallel(lenet(dtype=np.float64), workers=3)
    yield reference, parallel
    parallel.close()


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16])
def test_forward_backward_equal_the_wrapped_model(float64_pair, n):
    reference, parallel = float64_pair
    rng = np.random.default_rng(n)
    x, labels = tie_free_images(rng, n), rng.integers(0, 10, n)
    # Shards are np.array_split(range(n), 3): n=1 runs here alone, n=2 uses one worker.
    logits_ref, dx_ref, grads_ref = step(reference, x, labels)
    logits, dx, grads = step(parallel, x, labels)
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-14)
    assert list(grads) == list(grads_ref)
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_ref[name], rtol=1e-11, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("n", [1, 5, 16])
def test_one_exchange_forward_backward_equals_the_wrapped_model(float64_pair, n):
    reference, parallel = float64_pair
    rng = np.random.default_rng(10 + n)
    x, labels = tie_free_images(rng, n), rng.integers(0, 10, n)
    loss_fn = nn.SoftmaxCrossEntropy()
    loss_ref, logits_ref = reference.forward_backward(x, labels, loss_fn)
    grads_ref = {name: grad.copy() for name, grad in reference.named_gradients()}
    loss, logits = parallel.forward_backward(x, labels, loss_fn)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-12, atol=1e-13)
    for name, grad in parallel.named_gradients():
        np.testing.assert_allclose(grad, grads_ref[name], rtol=1e-11, atol=1e-14, err_msg=name)


def warp(images, rng):
    """A random per-image transform (module level, so workers can unpickle it)."""
    return images * rng.uniform(0.5, 1.5, (len(images), 1, 1, 1))


@pytest.mark.parametrize("n", [2, 7, 16])
def test_each_process_augments_its_own_shard_with_seeds_drawn_from_rng(float64_pair, n):
    reference, parallel = float64_pair
    data = np.random.default_rng(20 + n)
    x, labels = tie_free_images(data, n), data.integers(0, 10, n)
    loss_fn = nn.SoftmaxCrossEntropy()
    # The documented rule: one seed per worker (worker 1 first), then this process's shard
    # from rng itself.
    rng = np.random.default_rng(5)
    shards = [s for s in split(n, 3) if s.stop > s.start]
    seeds = [int(rng.integers(2**63)) for _ in shards[1:]]
    augmented = np.concatenate([warp(x[shards[0]], rng)] + [warp(x[shard], np.random.default_rng(seed))
                                                            for shard, seed in zip(shards[1:], seeds)])
    loss_ref, logits_ref = reference.forward_backward(augmented, labels, loss_fn)
    grads_ref = {name: grad.copy() for name, grad in reference.named_gradients()}

    rng = np.random.default_rng(5)
    loss, logits = parallel.forward_backward(x, labels, loss_fn, augment=warp, rng=rng)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-12, atol=1e-13)
    for name, grad in parallel.named_gradients():
        np.testing.assert_allclose(grad, grads_ref[name], rtol=1e-11, atol=1e-14, err_msg=name)


def test_augmenting_needs_a_generator(float64_pair):
    reference, parallel = float64_pair
    x, labels = np.zeros((4, 1, 28, 28)), np.zeros(4, dtype=int)
    for model in (reference, parallel):
        with pytest.raises(ValueError, match="augment needs rng"):
            model.forward_backward(x, labels, nn.SoftmaxCrossEntropy(), augment=warp)


def test_parameters_are_the_wrapped_models_and_updates_reach_the_workers(float64_pair):
    reference, parallel = float64_pair
    assert [name for name, _ in parallel.named_parameters()] == [name for name, _ in reference.named_parameters()]
    assert all(a is b for a, b in zip(parallel.parameters(), parallel.module.parameters()))
    # New weights through load_state_dict (in place, as an optimizer would write them) must
    # be what the workers compute with from the next forward on.
    other = lenet(seed=5, dtype=np.float64)
    parallel.load_state_dict(other.state_dict())
    x = mnist_like(np.random.default_rng(0), 9).astype(np.float64)
    parallel.eval(), other.eval()
    try:
        np.testing.assert_allclose(parallel.forward(x), other.forward(x), rtol=1e-12, atol=1e-13)
    finally:
        parallel.train()
        parallel.load_state_dict(reference.state_dict())
    assert repr(parallel).startswith("DataParallel(workers=3, module=Sequential(")


class SlowToStart(nn.Module):
    """The identity, taking 0.3 s to unpickle: a worker that starts slowly."""

    def forward(self, x):
        return x

    def backward(self, dout):
        return dout

    def __setstate__(self, state):
        time.sleep(0.3)
        self.__dict__.update(state)


def test_weights_loaded_while_workers_start_are_the_ones_they_use():
    # Weights loaded while workers are still starting (a resumed checkpoint) must win.
    def model(seed):
        return nn.Sequential(slow=SlowToStart(), fc=nn.Linear(5, 3, rng=np.random.default_rng(seed)))
    other, x = model(1), np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    with DataParallel(model(0), workers=2) as parallel:
        parallel.load_state_dict(other.state_dict())
        np.testing.assert_allclose(parallel.forward(x), other.forward(x), rtol=1e-6)


def train_steps(model, seed, steps=3, n=24):
    rng = np.random.default_rng(seed)
    optimizer = nn.SGD(dict(model.named_parameters()), lr=0.05, momentum=0.9)
    for _ in range(steps):
        x, labels = mnist_like(rng, n), rng.integers(0, 10, n)
        step(model, x, labels)
        optimizer.step(dict(model.named_gradients()))
    return model.state_dict()


def test_training_is_bit_reproducible_and_close_to_one_process():
    with DataParallel(lenet(dropout=0.3), workers=2) as first:
        weights_first = train_steps(first, seed=1)
    with DataParallel(lenet(dropout=0.3), workers=2) as second:
        weights_second = train_steps(second, seed=1)
    for name in weights_first:
        assert np.array_equal(weights_first[name], weights_second[name]), name
    # Without dropout (whose masks are drawn per shard), one process gives the same
    # weights up to float32 rounding of the split sums.
    with DataParallel(lenet(), workers=2) as parallel:
        weights_parallel = train_steps(parallel, seed=2)
    weights_single = train_steps(lenet(), seed=2)
    for name in weights_single:
        np.testing.assert_allclose(weights_parallel[name], weights_single[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def dropout_run(first_step, last_step, resume=None):
    """Steps [first_step, last_step) of a seeded dropout run on 2 workers; returns the weights
    and the generator state, what a checkpoint holds (plain SGD: no optimizer state)."""
    rng = np.random.default_rng(7)
    model = nn.lenet5(rng=rng, dropout=0.5)  # rng: weights, then the main dropout masks
    if resume is not None:
        model.load_state_dict(resume[0])
        rng.bit_generator.state = resume[1]
    with DataParallel(model, workers=2) as parallel:
        optimizer = nn.SGD(dict(parallel.named_parameters()), lr=0.05)
        for index in range(first_step, last_step):
            data = np.random.default_rng(100 + index)
            step(parallel, mnist_like(data, 8), data.integers(0, 10, 8))
            optimizer.step(dict(parallel.named_gradients()))
    return model.state_dict(), rng.bit_generator.state


def test_a_resumed_dropout_run_ends_bit_identical_to_an_uninterrupted_one():
    # Workers' masks come from seeds drawn from this process's generator, so its state
    # alone (saved in checkpoints) decides every later mask in every process.
    uninterrupted, _ = dropout_run(0, 4)
    resumed, _ = dropout_run(2, 4, resume=dropout_run(0, 2))
    for name in uninterrupted:
        assert np.array_equal(uninterrupted[name], resumed[name]), name


def test_workers_draw_their_own_dropout_masks_and_none_in_eval():
    x = np.ones((8, 1, 28, 28), dtype=np.float32)
    with DataParallel(lenet(dropout=0.5), workers=2) as parallel:
        logits = parallel.forward(x)
        # Identical images: rows differ only by their dropout masks, also across shards.
        assert not np.allclose(logits[:4], logits[4:])
        parallel.eval()
        logits = parallel.forward(x)
        np.testing.assert_allclose(logits, np.repeat(logits[:1], 8, axis=0), rtol=1e-6)


class FailsInWorkers(nn.Module):
    """The identity here; raises in any other process."""

    def __init__(self):
        super().__init__()
        self.home = os.getpid()

    def forward(self, x):
        if os.getpid() != self.home:
            raise ArithmeticError("boom in a worker")
        return x

    def backward(self, dout):
        return dout


def test_worker_failure_is_reported_and_requests_stay_paired_with_replies():
    with DataParallel(nn.Sequential(FailsInWorkers()), workers=2) as parallel:
        for _ in range(2):
            with pytest.raises(WorkerError, match="worker 1 failed:(.|\n)*ArithmeticError: boom in a worker"):
                parallel.forward(np.zeros((4, 3)))
    model = lenet().eval()
    x = mnist_like(np.random.default_rng(3), 6)
    with DataParallel(model, workers=2) as parallel:
        # Both processes fail; this one's error is raised, the worker's reply still read.
        with pytest.raises(ValueError, match="Conv2d expects"):
            parallel.forward(np.zeros((4, 2, 28, 28), dtype=np.float32))
        np.testing.assert_allclose(parallel.forward(x), lenet().eval().forward(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reaped", [False, True], ids=["at-once", "pipe-closed"])
def test_a_killed_worker_gives_a_clear_error_and_close_is_final(reaped):
    # At once, the request may still fit in the pipe (the error comes on reading the reply);
    # once the worker's end is closed, sending it fails: both name the worker and its exit code.
    parallel = DataParallel(lenet(), workers=2)
    (pid,) = parallel.worker_pids
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while reaped and time.monotonic() < deadline and _alive(pid):
        time.sleep(0.01)
    with pytest.raises(WorkerError, match=r"worker 1 died \(exit code -9\); closed"):
        parallel.forward(np.zeros((4, 1, 28, 28), dtype=np.float32))
    with pytest.raises(WorkerError, match="closed"):
        parallel.forward(np.zeros((4, 1, 28, 28), dtype=np.float32))
    parallel.close()  # idempotent


def test_workers_stop_on_close_and_when_garbage_collected():
    parallel = DataParallel(lenet(), workers=3)
    pids = parallel.worker_pids
    assert len(pids) == 2
    parallel.close()
    assert parallel.worker_pids == []
    collected = DataParallel(lenet(), workers=2)
    (pid,) = collected.worker_pids
    del collected
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_backward_after_a_separate_forward_reads_the_input_the_forward_saw():
    # Linear keeps its input for backward; in a worker that input came through the inbox,
    # where the BackwardRequest's dout is posted next. It must not be read from there.
    model = nn.Sequential(fc=nn.Linear(10, 3, rng=np.random.default_rng(0)))
    x = np.random.default_rng(1).standard_normal((4, 10)).astype(np.float32)
    dout = np.ones((4, 3), dtype=np.float32)
    model.forward(x)
    model.backward(dout)
    expected_grad = model.fc.grads["weight"].copy()
    with DataParallel(model, workers=2) as parallel:
        parallel.forward(x)
        parallel.backward(dout)
        np.testing.assert_allclose(model.fc.grads["weight"], expected_grad, rtol=1e-6, atol=1e-6)


def test_arrays_too_large_for_the_shared_boxes_go_through_the_pipe():
    features = BOX_BYTES // 4 // 2 + 1000  # two rows (one shard) overflow a box
    model = nn.Sequential(fc=nn.Linear(features, 3, rng=np.random.default_rng(0)))
    x = np.random.default_rng(1).standard_normal((4, features)).astype(np.float32)
    dout = np.ones((4, 3), dtype=np.float32)
    expected_out, expected_dx = model.forward(x), model.backward(dout)
    expected_grad = model.fc.grads["weight"].copy()
    with DataParallel(model, workers=2) as parallel:
        np.testing.assert_allclose(parallel.forward(x), expected_out, rtol=1e-5)
        np.testing.assert_allclose(parallel.backward(dout), expected_dx, rtol=1e-6)  # dx overflows too
        np.testing.assert_allclose(model.fc.grads["weight"], expected_grad, rtol=1e-5, atol=1e-6)


def test_retain_freed_memory_applies_on_glibc():
    import platform
    applied = retain_freed_memory()
    assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_one_worker_is_the_module_itself_and_bad_counts_fail():
    model = lenet()
    single = DataParallel(model, workers=1)
    assert single.worker_pids == []
    x = mnist_like(np.random.default_rng(0), 5)
    assert np.array_equal(single.forward(x), model.forward(x))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be an int >= 1"):
            DataParallel(model, workers=bad)


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_split_sizes_shards_as_array_split(workers):
    for n in range(40):
        bounds = np.cumsum([0] + [len(part) for part in np.array_split(np.arange(n), workers)])
        assert [(s.start, s.stop) for s in split(n, workers)] == list(zip(bounds[:-1], bounds[1:]))
