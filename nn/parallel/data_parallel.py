"""Data parallelism: every batch is split into equal shards, computed at once by processes.

NumPy runs each layer on one core, and threads do not help much (the Python between NumPy
calls holds the GIL; two threads sharing a LeNet-5 ran a step only 1.13x faster).
Processes do: two processes, each on half of a batch, take about as long as one on the half.

One training step of ``DataParallel(model, workers=2).forward_backward(x, labels, loss_fn)``:

1. The parameters are copied into shared memory (a few hundred kB), which the worker's
   replica of the model reads in place; the worker's shard of ``x`` and its labels go into
   its shared inbox, and a small request through a pipe starts it.
2. Both processes run forward, the loss of their own shard and backward, at the same
   time. A mean loss is divided by the WHOLE batch size, not the shard's, so the shards'
   losses add up to the batch's and their gradient rows are the batch's; a summed loss
   (``SoftmaxCrossEntropy(reduction="sum")``) adds up as it is.
3. The worker writes its parameter gradients into shared memory and its logits into its
   shared outbox, and replies with its loss; its gradients are added to this process's:
   the gradient of the whole batch, ready for the optimizer.

``forward`` and ``backward`` work too, as for any module (one exchange each).

The protocol (the messages and the worker's side are in ``nn/parallel/worker.py``). Each
worker has a pipe and four blocks of shared memory (``nn/parallel/shared_arrays.py``): the
parameters (one block for all workers, written by this process only), its parameter
gradients (written by the worker only), an inbox and an outbox. This process sends a
``ForwardRequest``, ``ForwardBackwardRequest`` or ``BackwardRequest``, whose arrays lie in
the inbox, and the worker answers each with exactly one ``Reply`` (its result in the outbox,
its gradients in its block) or ``Failure``; ``Close`` ends it, unanswered. A worker has at
most one request at a time, so no box is written while it is read.

The numbers are reproducible for a given number of workers, whichever core runs what: each
shard is computed by the same code on the same data and the shard gradients are added in a
fixed order. They are not bit-identical to ``workers=1`` (a sum over two half-batches rounds
differently from one sum over the batch), so the worker count belongs with the
hyperparameters.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import weakref
from typing import Any, Callable

import numpy as np

from nn.module import Module
from nn.parallel.shared_arrays import fetch, layout, post, shared_block, views
from nn.parallel.worker import (Augmentation, BackwardRequest, Close, Failure, ForwardBackwardRequest, ForwardRequest,
                                Posted, Reply, Request, parameter_owners, random_layers, serve, wait_for)

# Each worker uses one core: more BLAS threads per process would fight over the same cores.
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Arrays travel through shared memory, not pickled through the pipe (which costs ~0.1 ms
# per array each way): each worker has an inbox (its shard of the input, labels, output
# gradients) and an outbox (its logits, input gradients). Larger arrays take the pipe.
# A shard of a batch of 1000 MNIST images takes 1.6 MB.
BOX_BYTES = 4 << 20


class WorkerError(RuntimeError):
    """A worker process failed (its traceback is in the message) or died."""


def split(n: int, workers: int) -> list[slice]:
    """``workers`` consecutive slices of ``range(n)``, sized as ``np.array_split``'s.

    The first ``n % workers`` are one longer than the others (some are empty when
    ``n < workers``).
    """
    size, longer = divmod(n, workers)
    bounds = [k * size + min(k, longer) for k in range(workers + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """Set environment variables for the ``with`` block (processes started in it inherit
    them), then restore the previous values."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _shutdown(processes, connections) -> None:
    """Send every worker ``Close``, then wait for it (5 s at most before terminating it)."""
    for conn in connections:
        with contextlib.suppress(OSError):
            conn.send(Close())
            conn.close()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join()


# -- the module --------------------------------------------------------------------------
class DataParallel(Module):
    """Run ``module`` on ``workers`` processes at once, each on an equal shard of every batch.

    This process computes the first shard with ``module`` itself; ``workers - 1`` worker
    processes (started here, one core each) compute the others on replicas. It behaves as
    ``module`` does: same ``forward``/``backward`` results up to rounding, same parameter
    names, ``state_dict`` and ``load_state_dict``; gradients end up in ``module``'s ``grads``,
    summed over the shards. Optimizers may hold ``module``'s parameters as before.

    Parameters
    ----------
    module : Module
        The model. Layers must keep no state besides ``params`` (and Dropout's ``rng``,
        which each worker reseeds every training step from a seed drawn from this process's).
    workers : int, default 2
        Number of shards, = processes including this one; 1 runs ``module`` alone.

    Raises
    ------
    ValueError
        If ``workers`` is not an int >= 1.
    WorkerError
        From ``forward``, ``forward_backward`` and ``backward``, if a worker failed (its
        traceback in the message) or died, or after ``close()``.

    Shape
    -----
    x : (N, ...) -> what ``module`` returns for (N, ...); shards are ``np.array_split`` of N.

    Notes
    -----
    Call ``close()`` (or use ``with``) to stop the workers; they also stop when this object
    is garbage-collected or this process ends, and exit by themselves if it is killed.
    For a one-core-per-process split, run this process with one BLAS thread
    (``OPENBLAS_NUM_THREADS=1``); the workers are started with one.
    """

    def __init__(self, module: Module, workers: int = 2) -> None:
        super().__init__()
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        self.module, self.workers = module, workers
        self.training = module.training
        self._random_layers = random_layers(module)
        self._shards: list[slice] | None = None
        self._closed = False
        self._connections, self._processes, self._grads = [], [], []
        self._inboxes, self._outboxes = [], []
        if workers == 1:
            return
        self._owners = parameter_owners(module)
        slots, nbytes = layout(module.named_parameters())
        context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads
        self._params_block = shared_block(nbytes)
        self._params = views(self._params_block, slots)
        self._publish()
        with _environment(_ONE_THREAD):
            for _ in range(workers - 1):
                grads_block, inbox, outbox = shared_block(nbytes), shared_block(BOX_BYTES), shared_block(BOX_BYTES)
                here, there = context.Pipe()
                process = context.Process(target=serve, daemon=True,
                                          args=(there, module, slots, self._params_block, grads_block, inbox, outbox))
                process.start()
                there.close()
                self._connections.append(here)
                self._processes.append(process)
                self._grads.append(views(grads_block, slots))
                self._inboxes.append(inbox)
                self._outboxes.append(outbox)
        self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._connections)

    # -- the wrapped module's tree, names and flags -----------------------------------
    def children(self) -> dict[str, Module]:
        return self.module.children()  # so parameter names are the module's own

    def named_parameters(self, prefix: str = ""):
        return self.module.named_parameters(prefix)

    def named_gradients(self, prefix: str = ""):
        return self.module.named_gradients(prefix)

    def train(self, mode: bool = True) -> "DataParallel":
        self.training = bool(mode)
        self.module.train(mode)
        return self

    @property
    def input_grad(self) -> bool:
        return self.module.input_grad

    @input_grad.setter
    def input_grad(self, value: bool) -> None:
        self.module.input_grad = value

    def __repr__(self) -> str:
        return f"DataParallel(workers={self.workers}, module={self.module!r})"

    # -- computation -------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """``module.forward`` of the batch ``x``, each shard computed by its own process.

        Returns the shards' outputs concatenated in order.
        """
        shards = self._start(len(x))
        if len(shards) == 1:
            return self.module.forward(x)
        requests = [self._forward_request(*post([x[shard]], inbox)) for inbox, shard in self._workers_shards()]
        first, replies = self._run(requests, lambda: self.module.forward(x[shards[0]]))
        return np.concatenate([first, *(reply.result for reply in replies)])

    def forward_backward(self, x: np.ndarray, labels: np.ndarray, loss_fn, *, augment=None,
                         rng: np.random.Generator | None = None) -> tuple[float, np.ndarray]:
        """``augment``, ``forward``, ``loss_fn`` and ``backward`` of one training batch, in one exchange.

        ``forward`` then ``backward`` take two exchanges with the workers. Each process
        augments its own shard: augmenting the whole batch here, while the workers waited,
        took ~10% of a step; shared, steps are 4% (batch 32) and 7% (batch 64) faster
        (the pipeline's LeNet-5 and augmentation, AMD Zen 4, interleaved runs).

        Parameters
        ----------
        x, labels : numpy.ndarray
            The batch and its labels.
        loss_fn : callable
            ``loss_fn(logits, labels, batch_size) -> (loss, dlogits)``, as
            ``SoftmaxCrossEntropy`` takes it. Each process computes the loss of its shard
            given the whole batch size (a mean divides by it, a sum needs no divisor), so
            the shards' losses add up to the batch's and their gradient rows are the
            batch's, whatever the reduction.
        augment : callable, optional
            ``augment(images, rng) -> images``, a random transform of the training images
            (picklable: a module-level function or a ``functools.partial`` of one). This
            process's shard is transformed with ``rng``; each worker's with a fresh generator
            seeded by a number drawn from ``rng`` first (worker 1 first), so ``rng`` alone
            decides every transform.
        rng : numpy.random.Generator, optional
            Needed with ``augment``.

        Returns
        -------
        loss : float
            The batch's loss.
        logits : numpy.ndarray
            The batch's output.

        Shape
        -----
        x : (N, ...), labels : (N,) -> logits : (N, K)

        Notes
        -----
        The gradients, summed over the shards, are left in ``grads``; input gradients are
        not returned.
        """
        if augment is not None and rng is None:
            raise ValueError("forward_backward: augment needs rng")
        shards, n = self._start(len(x)), len(x)
        if len(shards) == 1:
            return super().forward_backward(x, labels, loss_fn, augment=augment, rng=rng)
        requests = []
        for inbox, shard in self._workers_shards():
            x_posted, labels_posted = post([x[shard], labels[shard]], inbox)
            augmentation = None if augment is None else Augmentation(augment, int(rng.integers(2**63)))
            requests.append(ForwardBackwardRequest(self._forward_request(x_posted), labels_posted, n, loss_fn,
                                                   augmentation))

        def own():
            own_x = x[shards[0]]
            logits = self.module.forward(own_x if augment is None else augment(own_x, rng))
            loss, dlogits = loss_fn(logits, labels[shards[0]], n)
            self.module.backward(dlogits)
            return loss, logits

        (loss, logits), replies = self._run(requests, own)
        self._add_worker_gradients(len(replies))
        return (loss + sum(reply.loss for reply in replies),
                np.concatenate([logits, *(reply.result for reply in replies)]))

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """``module.backward`` of the last ``forward``'s batch, each process on its shard.

        Returns the input gradient (None when ``input_grad`` is off); the parameter
        gradients, summed over the shards, are left in ``grads``. Raises ``RuntimeError``
        before any forward.
        """
        if self._shards is None:
            raise RuntimeError("DataParallel.backward called before forward")
        shards = self._shards
        if len(shards) == 1:
            return self.module.backward(dout)
        requests = [BackwardRequest(*post([dout[shard]], inbox)) for inbox, shard in self._workers_shards()]
        first, replies = self._run(requests, lambda: self.module.backward(dout[shards[0]]))
        self._add_worker_gradients(len(replies))
        return None if first is None else np.concatenate([first, *(reply.result for reply in replies)])

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (for monitoring, e.g. their memory)."""
        return [p.pid for p in self._processes if p.is_alive()]

    def close(self) -> None:
        """Stop the worker processes (idempotent); later forward/backward calls raise."""
        self._closed = True
        if self._processes:
            self._finalizer()

    def __enter__(self) -> "DataParallel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------
    def _start(self, n: int) -> list[slice]:
        """The non-empty shards of a batch of ``n`` (remembered for ``backward``); when
        there are several, the current parameters are published to the workers."""
        shards = [s for s in split(n, self.workers) if s.stop > s.start] or [slice(0, n)]
        self._shards = shards
        if len(shards) > 1:
            self._publish()
        return shards

    def _workers_shards(self) -> list[tuple[Any, slice]]:
        """``(inbox, shard)`` of each worker that has a shard of the current batch (shard 0
        is this process's)."""
        return list(zip(self._inboxes, self._shards[1:]))

    def _forward_request(self, x: Posted) -> ForwardRequest:
        """A ``ForwardRequest`` for the posted shard ``x``, in the current mode. Its dropout
        seeds come from this process's generators, so they alone decide every worker's masks."""
        seeds = [int(layer.rng.integers(2**63)) for layer in self._random_layers] if self.training else []
        return ForwardRequest(self.training, self.input_grad, seeds, x)

    def _add_worker_gradients(self, workers: int) -> None:
        """Add the gradients of the first ``workers`` workers to ``module``'s, in order."""
        for grads in self._grads[:workers]:
            for name, owner, key in self._owners:
                owner.grads[key] += grads[name]  # backward stores fresh arrays: safe to add into

    def _publish(self) -> None:
        """Copy the current parameters where the workers read them."""
        for name, owner, key in self._owners:
            self._params[name][...] = owner.params[key]

    def _run(self, requests: list[Request], own: Callable[[], Any]) -> tuple[Any, list[Reply]]:
        """Send ``requests[k]`` (its arrays posted in inbox k) to worker k, run ``own()`` here
        meanwhile, then collect every reply.

        Returns
        -------
        first : Any
            What ``own()`` returned.
        replies : list of Reply
            Worker k's, its ``result`` fetched: a view of outbox k (copy it before the next
            request), an array, or None.

        Raises
        ------
        WorkerError
            If this is closed, a worker is gone, or a worker answered with a ``Failure``.
            All replies are read even when something fails, so that requests and replies
            stay paired.
        """
        if self._closed:
            raise WorkerError("DataParallel is closed")
        for k, (conn, request) in enumerate(zip(self._connections, requests)):
            try:
                conn.send(request)
            except (OSError, ValueError):
                raise self._died(k) from None
        try:
            first = own()
        finally:
            replies = [self._receive(k) for k in range(len(requests))]
        for k, reply in enumerate(replies):
            if isinstance(reply, Failure):
                raise WorkerError(f"DataParallel worker {k + 1} failed:\n{reply.traceback}")
        return first, [Reply(reply.loss, fetch(reply.result, outbox)) for reply, outbox in zip(replies, self._outboxes)]

    def _receive(self, k: int) -> Reply | Failure:
        """Worker k's answer to its request; raises ``WorkerError`` (and closes) if it died."""
        conn = self._connections[k]
        try:
            wait_for(conn)
            return conn.recv()
        except (EOFError, OSError):
            raise self._died(k) from None

    def _died(self, k: int) -> WorkerError:
        """Close everything and return the error naming worker k, which is gone, and its exit code."""
        # Its pipe can break before the kernel has reaped it: wait briefly so the code is known.
        self._processes[k].join(timeout=1)
        code = self._processes[k].exitcode
        self.close()
        return WorkerError(f"DataParallel worker {k + 1} died (exit code {code}); closed")
