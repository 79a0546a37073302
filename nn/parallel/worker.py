"""The worker side of ``nn.DataParallel``: the messages, and the loop a worker process runs.

A worker holds a replica of the model whose parameters are views of a shared block the
parent publishes before every step. It waits for a request through its pipe, runs it on its
shard (read from its shared inbox), writes its parameter gradients to its own shared block
and its result to its outbox, and answers with exactly one ``Reply`` or ``Failure``. See
``nn/parallel/data_parallel.py`` for the parent side and the whole protocol.
"""

from __future__ import annotations

import signal
import time
import traceback
from typing import Callable, Iterator, NamedTuple

import numpy as np

from nn.module import Module
from nn.parallel.memory import retain_freed_memory
from nn.parallel.shared_arrays import Slot, fetch, post, views

# Waiting for a message is a short spin, then a blocking wait: waking a sleeping process
# costs ~0.1-0.3 ms on these machines, a few % of a step; steps come faster than this.
SPIN_SECONDS = 0.002

# An array as a message carries it: a Slot in the sender's box, or, when it did not fit,
# the array itself (pickled); None where there is no array.
Posted = Slot | np.ndarray | None


# -- messages: requests to a worker, and its answers --------------------------------------
# Shapes: worker k computes rows ``shards[k]`` of a batch of N, n_k rows.
class ForwardRequest(NamedTuple):
    """Run ``forward`` on a shard; answered by a ``Reply`` with the output.

    Attributes
    ----------
    training : bool
        The mode to run in (``module.train(training)``).
    input_grad : bool
        ``module.input_grad``: whether the next ``backward`` returns the input gradient.
    seeds : list of int
        Seeds for fresh generators of the layers that draw random numbers (Dropout), one
        each in ``_random_layers`` order; empty in eval mode.
    x : Posted, (n_k, ...)
        The worker's shard of the input, in its inbox.
    """

    training: bool
    input_grad: bool
    seeds: list[int]
    x: Posted


class Augmentation(NamedTuple):
    """A random transform of a shard's training images, and the seed of its generator.

    Attributes
    ----------
    transform : callable
        ``transform(x, rng) -> x``, e.g. ``functools.partial(nn.augment, max_shift=2.0)``
        (pickled with the request: a module-level function or a partial of one).
    seed : int
        Seeds the fresh ``numpy.random.Generator`` it draws from, so the parent's generator
        alone decides every worker's transforms.
    """

    transform: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    seed: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The transformed shard (``x`` itself when the transform changes nothing)."""
        return self.transform(x, np.random.default_rng(self.seed))


class ForwardBackwardRequest(NamedTuple):
    """Run ``forward``, the loss and ``backward`` on a shard (augmented first, if asked).

    Answered by a ``Reply`` with the loss and the output, the parameter gradients in the
    worker's gradient block.

    Attributes
    ----------
    forward : ForwardRequest
        The forward half; its ``x`` lies first in the inbox.
    labels : Posted, (n_k,) ints
        The shard's labels, after ``x`` in the inbox.
    batch_size : int
        N, the whole batch's size: the divisor of a mean loss.
    loss_fn : callable
        ``loss_fn(logits, labels, batch_size) -> (loss, dlogits)`` (``SoftmaxCrossEntropy``,
        a few bytes pickled).
    augmentation : Augmentation or None
        Applied to the shard's images before ``forward``.
    """

    forward: ForwardRequest
    labels: Posted
    batch_size: int
    loss_fn: Callable[..., tuple[float, np.ndarray]]
    augmentation: Augmentation | None


class BackwardRequest(NamedTuple):
    """Run ``backward`` of the last forward.

    Answered by a ``Reply`` with the input gradient, the parameter gradients in the worker's
    gradient block.

    Attributes
    ----------
    dout : Posted, (n_k, ...) like the last output
        Gradient of the loss with respect to that output, in the inbox.
    """

    dout: Posted


class Close(NamedTuple):
    """Stop: the worker returns, unanswered."""


class Reply(NamedTuple):
    """A request done.

    Attributes
    ----------
    loss : float or None
        The shard's loss (given the whole batch size) for a ``ForwardBackwardRequest``,
        else None.
    result : Posted, (n_k, K) logits or (n_k, ...) like ``x``
        The output of forward, or the input gradient of backward (None when
        ``input_grad`` is off), in the worker's outbox.
    """

    loss: float | None
    result: Posted


class Failure(NamedTuple):
    """A request that raised in the worker, which goes on serving.

    Attributes
    ----------
    traceback : str
        The formatted traceback; raised here inside a ``WorkerError``.
    """

    traceback: str


Request = ForwardRequest | ForwardBackwardRequest | BackwardRequest | Close



def _named_modules(module: Module, prefix: str = "") -> Iterator[tuple[str, Module]]:
    """``(dotted prefix, module)`` for ``module`` and all its descendants, in a fixed order."""
    yield prefix, module
    for name, child in module.children().items():
        yield from _named_modules(child, prefix + name + ".")


def random_layers(module: Module) -> list[Module]:
    """The layers of ``module`` that draw random numbers in training (Dropout).

    Each worker needs its own stream for them, seeded from the parent's, so that one seed
    fixes the whole run.
    """
    return [m for _, m in _named_modules(module) if isinstance(getattr(m, "rng", None), np.random.Generator)]


def parameter_owners(module: Module) -> list[tuple[str, Module, str]]:
    """``(dotted name, owner, key)`` of each parameter of ``module``, in ``named_parameters`` order.

    ``owner.params[key]`` and ``owner.grads[key]`` are the parameter's value and gradient.
    Both sides of every step go through the parameters by this list, made once: walking
    the module tree (``named_gradients``) cost ~13 us more per pass on LeNet-5, and a step
    makes three (publish, the worker's copy, the add): ~2% of a batch-32 step, 0.97x in
    interleaved steps (AMD Zen 4; within this shared machine's noise).
    """
    return [(prefix + key, owner, key) for prefix, owner in _named_modules(module) for key in owner.params]


def _bind(owners: list[tuple[str, Module, str]], params: dict[str, np.ndarray]) -> None:
    """Make the parameters of ``owners`` (``parameter_owners``) *be* the shared ``params``
    views (whose values the parent publishes before every forward: a worker never writes them)."""
    for name, owner, key in owners:
        owner.params[key] = params[name]


def wait_for(conn) -> None:
    """Return when ``conn`` has a message (or is closed): spin briefly, then sleep."""
    deadline = time.perf_counter() + SPIN_SECONDS
    while not conn.poll(0):
        if time.perf_counter() > deadline:
            conn.poll(None)
            return


def _run_forward(module: Module, random_layers: list[Module], request: ForwardRequest, inbox,
                 augmentation: Augmentation | None = None, copy_input: bool = False) -> np.ndarray:
    """Set the mode, flags and dropout generators a ``ForwardRequest`` asks for; run forward
    (on the augmented shard, when ``augmentation`` is given; on a copy of the shard, not its
    view of the inbox, with ``copy_input``)."""
    module.train(request.training)
    module.input_grad = request.input_grad
    for layer, seed in zip(random_layers, request.seeds):
        layer.rng = np.random.default_rng(seed)
    x = fetch(request.x, inbox)
    if copy_input:
        x = np.array(x)
    return module.forward(x if augmentation is None else augmentation(x))


def serve(conn, module: Module, slots: dict[str, Slot], params_block, grads_block, inbox, outbox) -> None:
    """A worker's loop: answer requests on its replica of ``module`` until ``Close``.

    Parameters
    ----------
    conn : multiprocessing.connection.Connection
        This worker's end of its pipe: requests in, replies out.
    module : Module
        The replica (unpickled from the parent's model); its parameters are rebound to views
        of ``params_block``.
    slots : dict of str to Slot
        The layout of ``params_block`` and ``grads_block``, by parameter name.
    params_block, grads_block, inbox, outbox
        This worker's shared blocks (see the module docstring).

    Notes
    -----
    Returns on ``Close`` or when the parent is gone (the pipe closes). An exception in a
    request is sent back as a ``Failure`` and the loop goes on.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which closes us
    retain_freed_memory()
    owners = parameter_owners(module)
    _bind(owners, views(params_block, slots))
    grads = views(grads_block, slots)
    random_layers_ = random_layers(module)
    while True:
        try:
            wait_for(conn)
            request = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if isinstance(request, Close):
            return
        try:
            loss = None
            if isinstance(request, ForwardRequest):
                # Layers keep their input for backward, and a BackwardRequest's dout will be
                # posted over this inbox: run on a copy. (A ForwardBackwardRequest's shard
                # stays in place until its backward is done.)
                result = _run_forward(module, random_layers_, request, inbox, copy_input=True)
            elif isinstance(request, ForwardBackwardRequest):
                result = _run_forward(module, random_layers_, request.forward, inbox, request.augmentation)
                loss, dlogits = request.loss_fn(result, fetch(request.labels, inbox), request.batch_size)
                module.backward(dlogits)
            else:  # a BackwardRequest
                result = module.backward(fetch(request.dout, inbox))
            if not isinstance(request, ForwardRequest):
                for name, owner, key in owners:
                    grads[name][...] = owner.grads[key]
            reply = Reply(loss, *post([result], outbox))
        except Exception:  # report it; the parent raises it as a WorkerError
            reply = Failure(traceback.format_exc())
        try:
            conn.send(reply)
        except OSError:  # the parent is gone (interrupted while we worked): nothing to report to
            return
