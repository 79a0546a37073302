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

The numbers are reproducible for a given number of workers, whichever core runs what: each
shard is computed by the same code on the same data and the shard gradients are added in a
fixed order. They are not bit-identical to ``workers=1`` (a sum over two half-batches rounds
differently from one sum over the batch), so the worker count belongs with the
hyperparameters.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import time
import traceback
import weakref
from typing import Iterator

import numpy as np

from nn.memory import retain_freed_memory
from nn.module import Module

# Each worker uses one core: more BLAS threads per process would fight over the same cores.
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_ALIGN = 64  # bytes: every shared array starts on its own cache line
# Arrays travel through shared memory, not pickled through the pipe (which costs ~0.1 ms
# per array each way): each worker has an inbox (its shard of the input, labels, output
# gradients) and an outbox (its logits, input gradients). Larger arrays take the pipe.
# A shard of a batch of 1000 MNIST images takes 1.6 MB.
BOX_BYTES = 4 << 20
# Waiting for a message is a short spin, then a blocking wait: waking a sleeping process
# costs ~0.1-0.3 ms on these machines, a few % of a step; steps come faster than this.
SPIN_SECONDS = 0.002


class WorkerError(RuntimeError):
    """A worker process failed (its traceback is in the message) or died."""


def _layout(module: Module) -> tuple[list[tuple[str, str, tuple[int, ...], int]], int]:
    """``(name, dtype, shape, byte offset)`` of every parameter in one shared block, and its size."""
    entries, offset = [], 0
    for name, value in module.named_parameters():
        entries.append((name, value.dtype.str, value.shape, offset))
        offset += -(-value.nbytes // _ALIGN) * _ALIGN
    return entries, max(offset, 1)


def _view(block, dtype, shape, offset: int = 0) -> np.ndarray:
    """An array of ``dtype`` and ``shape`` viewing the shared ``block`` from byte ``offset``."""
    return np.frombuffer(block, dtype=np.dtype(dtype), count=int(np.prod(shape)), offset=offset).reshape(shape)


def _views(block, layout) -> dict[str, np.ndarray]:
    """Arrays by parameter name, viewing the shared ``block`` (no copies)."""
    return {name: _view(block, dtype, shape, offset) for name, dtype, shape, offset in layout}


def _named_modules(module: Module, prefix: str = "") -> Iterator[tuple[str, Module]]:
    """``(dotted prefix, module)`` for ``module`` and all its descendants, in a fixed order."""
    yield prefix, module
    for name, child in module.children().items():
        yield from _named_modules(child, prefix + name + ".")


def _random_layers(module: Module) -> list[Module]:
    """Layers that draw random numbers in training (Dropout): each worker needs its own
    stream for them, seeded from this process's so that one seed fixes the whole run."""
    return [m for _, m in _named_modules(module) if isinstance(getattr(m, "rng", None), np.random.Generator)]


def _bind(module: Module, views: dict[str, np.ndarray]) -> None:
    """Make ``module``'s parameters *be* the shared ``views`` (whose values the parent
    publishes before every forward: a worker never writes them)."""
    for prefix, owner in _named_modules(module):
        for key in owner.params:
            owner.params[key] = views[prefix + key]


def _wait(conn) -> None:
    """Return when ``conn`` has a message (or is closed): spin briefly, then sleep."""
    deadline = time.perf_counter() + SPIN_SECONDS
    while not conn.poll(0):
        if time.perf_counter() > deadline:
            conn.poll(None)
            return


class _Boxed(tuple):
    """Where an array lies in a box: ``(dtype, shape, byte offset)``."""


def _post(arrays: list, box) -> list:
    """Copy ``arrays`` one after another into the shared ``box``; returns what to send in
    their place: a ``_Boxed`` for each array that fits, anything else (None, or an array
    too large) as it is."""
    items, offset = [], 0
    for array in arrays:
        if isinstance(array, np.ndarray) and offset + array.nbytes <= len(box):
            _view(box, array.dtype, array.shape, offset)[...] = array
            items.append(_Boxed((array.dtype.str, array.shape, offset)))
            offset += -(-array.nbytes // _ALIGN) * _ALIGN
        else:
            items.append(array)
    return items


def _fetch(items: list, box) -> list:
    """The arrays ``_post`` sent, as views of ``box`` (valid until the box is written again)."""
    return [_view(box, *item) if isinstance(item, _Boxed) else item for item in items]


def _serve(conn, module: Module, layout, params_block, grads_block, inbox, outbox) -> None:
    """A worker's loop: run forward/backward requests on its replica until told to stop.

    Requests: ``("forward", training, input_grad, seeds, [x])``,
    ``("forward_backward", training, input_grad, seeds, [x, labels], batch_size, loss_fn)``,
    ``("backward", [dout])`` and ``("close",)``, arrays boxed in ``inbox``. Replies:
    ``("ok", loss or None, [result])`` with the result (logits or input gradient) boxed in
    ``outbox``, or ``("error", traceback)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which closes us
    retain_freed_memory()
    _bind(module, _views(params_block, layout))
    grads = _views(grads_block, layout)
    random_layers = _random_layers(module)
    while True:
        try:
            _wait(conn)
            request = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        kind = request[0]
        if kind == "close":
            return
        try:
            loss = None
            if kind == "backward":
                (dout,) = _fetch(request[1], inbox)
                result = module.backward(dout)
            else:
                training, input_grad, seeds, arrays = request[1:5]
                module.train(training)
                module.input_grad = input_grad
                for layer, seed in zip(random_layers, seeds):
                    layer.rng = np.random.default_rng(seed)
                x, *labels = _fetch(arrays, inbox)
                result = module.forward(x)
                if kind == "forward_backward":
                    batch_size, loss_fn = request[5:]
                    loss, dlogits = loss_fn(result, labels[0], batch_size)
                    module.backward(dlogits)
            if kind != "forward":
                for name, grad in module.named_gradients():
                    grads[name][...] = grad
            conn.send(("ok", loss, _post([result], outbox)))
        except Exception:  # report it; the parent raises it as a WorkerError
            conn.send(("error", traceback.format_exc()))


@contextlib.contextmanager
def _environment(values: dict[str, str]):
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
    for conn in connections:
        with contextlib.suppress(OSError):
            conn.send(("close",))
            conn.close()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join()


class DataParallel(Module):
    """Run ``module`` on ``workers`` processes at once, each on an equal shard of every batch.

    This process computes the first shard with ``module`` itself; ``workers - 1`` worker
    processes (started here, one core each) compute the others on replicas. It behaves as
    ``module`` does: same ``forward``/``backward`` results up to rounding, same parameter
    names, ``state_dict`` and ``load_state_dict``; gradients end up in ``module``'s ``grads``,
    summed over the shards. Optimizers may hold ``module``'s parameters as before.

    Args
    ----
    module : the model. Layers must keep no state besides ``params`` (and Dropout's ``rng``,
        which each worker reseeds every training step from a seed drawn from this process's).
    workers : number of shards, = processes including this one; 1 runs ``module`` alone.

    Shape
    -----
    x : (N, ...) -> what ``module`` returns for (N, ...); shards are ``np.array_split`` of N.

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
        self._random_layers = _random_layers(module)
        self._shards: list[slice] | None = None
        self._closed = False
        self._connections, self._processes, self._grads = [], [], []
        self._inboxes, self._outboxes = [], []
        if workers == 1:
            return
        layout, size = _layout(module)
        context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads
        self._params_block = context.RawArray(ctypes.c_uint8, size)
        self._params = _views(self._params_block, layout)
        self._publish()
        with _environment(_ONE_THREAD):
            for _ in range(workers - 1):
                grads_block = context.RawArray(ctypes.c_uint8, size)
                inbox = context.RawArray(ctypes.c_uint8, BOX_BYTES)
                outbox = context.RawArray(ctypes.c_uint8, BOX_BYTES)
                here, there = context.Pipe()
                process = context.Process(target=_serve, daemon=True,
                                          args=(there, module, layout, self._params_block, grads_block, inbox, outbox))
                process.start()
                there.close()
                self._connections.append(here)
                self._processes.append(process)
                self._grads.append(_views(grads_block, layout))
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
        shards = self._start(len(x))
        if len(shards) == 1:
            return self.module.forward(x)
        requests = [("forward", *self._header(inbox, [x[shard]])) for inbox, shard in zip(self._inboxes, shards[1:])]
        first, rest = self._run(requests, lambda: self.module.forward(x[shards[0]]))
        return np.concatenate([first, *(result for _, result in rest)])

    def forward_backward(self, x: np.ndarray, labels: np.ndarray, loss_fn) -> tuple[float, np.ndarray]:
        """``forward``, ``loss_fn`` and ``backward`` of one training batch in ONE exchange
        with the workers (``forward`` then ``backward`` take two): each process computes the
        loss of its shard given the whole batch size (``loss_fn(logits, labels, batch_size)``,
        as ``SoftmaxCrossEntropy`` takes it: a mean divides by it, a sum needs no divisor),
        so the shards' losses add up to the batch's and their gradient rows are the batch's,
        whatever the reduction. Returns ``(loss, logits)``;
        the summed gradients are in ``grads``; input gradients are not returned."""
        shards, n = self._start(len(x)), len(x)
        if len(shards) == 1:
            return super().forward_backward(x, labels, loss_fn)
        requests = [("forward_backward", *self._header(inbox, [x[shard], labels[shard]]), n, loss_fn)
                    for inbox, shard in zip(self._inboxes, shards[1:])]

        def own():
            logits = self.module.forward(x[shards[0]])
            loss, dlogits = loss_fn(logits, labels[shards[0]], n)
            self.module.backward(dlogits)
            return loss, logits

        (loss, logits), rest = self._run(requests, own)
        self._add_worker_gradients(len(rest))
        return loss + sum(part_loss for part_loss, _ in rest), np.concatenate([logits, *(part for _, part in rest)])

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        if self._shards is None:
            raise RuntimeError("DataParallel.backward called before forward")
        shards = self._shards
        if len(shards) == 1:
            return self.module.backward(dout)
        requests = [("backward", _post([dout[shard]], inbox)) for inbox, shard in zip(self._inboxes, shards[1:])]
        first, rest = self._run(requests, lambda: self.module.backward(dout[shards[0]]))
        self._add_worker_gradients(len(rest))
        return None if first is None else np.concatenate([first, *(result for _, result in rest)])

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
    def _split(self, n: int) -> list[slice]:
        bounds = np.cumsum([0] + [len(part) for part in np.array_split(np.empty(n), self.workers)])
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def _start(self, n: int) -> list[slice]:
        """The non-empty shards of a batch of ``n`` (remembered for ``backward``); when
        there are several, the current parameters are published to the workers."""
        shards = [s for s in self._split(n) if s.stop > s.start] or [slice(0, n)]
        self._shards = shards
        if len(shards) > 1:
            self._publish()
        return shards

    def _header(self, inbox, arrays: list) -> tuple:
        """``(training, input_grad, dropout seeds, boxed arrays)`` of a forward request; the
        seeds come from this process's generators, so they alone decide every worker's masks."""
        seeds = [int(layer.rng.integers(2**63)) for layer in self._random_layers] if self.training else []
        return self.training, self.input_grad, seeds, _post(arrays, inbox)

    def _add_worker_gradients(self, workers: int) -> None:
        for grads in self._grads[:workers]:
            for name, grad in self.module.named_gradients():
                grad += grads[name]  # backward stores fresh arrays: safe to add into

    def _publish(self) -> None:
        """Copy the current parameters where the workers read them."""
        for name, value in self.module.named_parameters():
            self._params[name][...] = value

    def _run(self, requests: list, own):
        """Send ``requests[k]`` to worker k, run ``own()`` here meanwhile, then collect every
        reply: ``(own's result, [(worker loss, worker result)])``. All replies are read even when
        something fails, so that requests and replies stay paired."""
        if self._closed:
            raise WorkerError("DataParallel is closed")
        for conn, request in zip(self._connections, requests):
            try:
                conn.send(request)
            except (OSError, ValueError) as error:
                self.close()
                raise WorkerError(f"DataParallel worker is gone ({error}); closed") from None
        try:
            first = own()
        finally:
            replies = [self._receive(k) for k in range(len(requests))]
        for k, reply in enumerate(replies):
            if reply[0] == "error":
                raise WorkerError(f"DataParallel worker {k + 1} failed:\n{reply[1]}")
        # (loss, result) per worker; results are views of the outboxes: copy before reuse.
        return first, [(loss, _fetch(items, outbox)[0])
                       for (_, loss, items), outbox in zip(replies, self._outboxes)]

    def _receive(self, k: int):
        conn = self._connections[k]
        try:
            _wait(conn)
            return conn.recv()
        except (EOFError, OSError):
            code = self._processes[k].exitcode
            self.close()
            raise WorkerError(f"DataParallel worker {k + 1} died (exit code {code}); closed") from None
