"""Optimizers: SGD (momentum, Nesterov), Adam and AdamW, updating parameters in place by name.

An optimizer holds the model's own parameter arrays (``dict(model.named_parameters())``)
and changes them in place, so the model sees every update. The learning rate is the plain
attribute ``opt.lr``: the trainer sets it from a schedule before each step, and it is the
only place a learning rate lives.

The update rules follow ``torch.optim`` (default, non-foreach arithmetic) so runs can be
compared with PyTorch, with one deliberate difference: **weight decay applies only to
weights (ndim > 1), never to biases** (ndim 1). ``torch.optim`` decays every parameter it is
given; to get the same numbers from torch, put biases in a param group with
``weight_decay=0``. Decaying a bias only pulls the activation threshold towards zero,
which regularises nothing useful.

Everything that shapes the next update (the step count and each per-parameter buffer) is
exposed by :meth:`Optimizer.state_dict` as NumPy arrays, so it fits in an ``.npz`` file:
save -> load -> continue is bit-identical to never stopping.

Dtype: buffers have their parameter's dtype and every scalar is a Python float, so float32
parameters stay float32 (a NumPy float64 *scalar* such as ``beta ** np.int64(t)`` would
promote them to float64 under NumPy 2's rules; hence ``int``/``float`` conversions below).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

OPTIMIZERS = ("sgd", "adam", "adamw")

_STEP_KEY = "step"


def decays(param: np.ndarray) -> bool:
    """Whether weight decay applies to ``param``: weights (ndim > 1) yes, biases no."""
    return param.ndim > 1


class Optimizer:
    """Shared bookkeeping: parameters by name, the step count, per-parameter buffers.

    Subclasses name their buffers in ``buffer_names`` (each a zero array shaped like its
    parameter, e.g. ``velocity``) and implement :meth:`_update` for one parameter.

    Attributes
    ----------
    params : dict[str, np.ndarray]
        Name -> the model's parameter array (updated in place).
    lr : float
        Learning rate of the next :meth:`step`; set it freely between steps.
    steps : int
        Number of completed steps.
    buffers : dict[str, dict[str, np.ndarray]]
        Buffer name -> (parameter name -> array shaped like the parameter).
    """

    buffer_names: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, np.ndarray], lr: float, weight_decay: float):
        self.params = _checked_params(params)
        self.lr = _non_negative("lr", lr)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.steps = 0
        self.buffers = {buffer: {name: np.zeros_like(param) for name, param in self.params.items()}
                        for buffer in self.buffer_names}

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """Apply one update to every parameter, in place.

        Parameters
        ----------
        grads : Mapping[str, np.ndarray]
            Parameter name -> gradient of the loss, same keys, shapes and dtypes as
            ``params``. Never modified.

        Raises
        ------
        ValueError
            A missing or extra key, or a gradient of the wrong shape or dtype (nothing is
            updated then).
        """
        _check_same_keys("grads", grads, self.params)
        for name, param in self.params.items():
            grad = grads[name]
            if not isinstance(grad, np.ndarray) or grad.shape != param.shape or grad.dtype != param.dtype:
                raise ValueError(f"grads[{name!r}] must be an array of shape {param.shape} and "
                                 f"dtype {param.dtype}, got {_describe(grad)}")
        self.steps += 1
        # A plain float: a NumPy float64 lr would promote float32 parameters.
        lr = float(self.lr)
        for name, param in self.params.items():
            self._update(name, param, grads[name], lr)

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the state: ``"step"`` (0-d int64) and ``"<buffer>.<param name>"`` arrays.

        Hyperparameters (lr, momentum, betas, ...) are not state: they come from the config.
        """
        state = {_STEP_KEY: np.array(self.steps, dtype=np.int64)}
        for buffer, arrays in self.buffers.items():
            state.update({f"{buffer}.{name}": array.copy() for name, array in arrays.items()})
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a :meth:`state_dict` exactly (strict: same keys, shapes and dtypes).

        Everything is checked before anything changes, so a failed load leaves the
        optimizer as it was.

        Parameters
        ----------
        state : Mapping[str, np.ndarray]
            As :meth:`state_dict` returns it.

        Raises
        ------
        ValueError
            Naming the missing, extra or mismatched keys.
        """
        expected = self.state_dict()
        _check_same_keys("optimizer state", state, expected)
        step = np.asarray(state[_STEP_KEY])
        if step.ndim != 0 or step.dtype.kind not in "iu" or int(step) < 0:
            raise ValueError(f"optimizer state['step'] must be a non-negative 0-d integer array, "
                             f"got {_describe(state[_STEP_KEY])}")
        for key, reference in expected.items():
            value = state[key]
            if key != _STEP_KEY and (not isinstance(value, np.ndarray) or value.shape != reference.shape
                                     or value.dtype != reference.dtype):
                raise ValueError(f"optimizer state[{key!r}] must be an array of shape "
                                 f"{reference.shape} and dtype {reference.dtype}, got {_describe(value)}")
        self.steps = int(step)
        for buffer, arrays in self.buffers.items():
            for name, array in arrays.items():
                np.copyto(array, state[f"{buffer}.{name}"])


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    With ``g`` the gradient (plus ``weight_decay * p`` for weights), velocity ``v`` (starts
    at 0, so the first step has ``v = g`` exactly as torch's buffer) and momentum ``mu``::

        v = mu * v + g
        p -= lr * (g + mu * v)   if nesterov
        p -= lr * v              otherwise (just ``lr * g`` when mu == 0)

    Parameters
    ----------
    params : Mapping[str, np.ndarray]
        Name -> parameter array, updated in place.
    lr : float
        Learning rate (``opt.lr`` may be changed between steps).
    momentum : float in [0, 1), default 0.0
        ``mu``.
    nesterov : bool, default False
        Nesterov momentum (needs momentum > 0).
    weight_decay : float, default 0.0
        L2 factor added to the gradient of weights (not biases).
    """

    def __init__(self, params: Mapping[str, np.ndarray], lr: float, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        self.momentum = _fraction("momentum", momentum)
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.nesterov = bool(nesterov)
        # No velocity buffers when they would stay zero: the state holds only what matters.
        self.buffer_names = ("velocity",) if self.momentum > 0 else ()
        super().__init__(params, lr, weight_decay)

    def _update(self, name, param, grad, lr):
        if self.weight_decay and decays(param):
            grad = grad + self.weight_decay * param  # a new array: the model's grad stays intact
        if self.momentum:
            velocity = self.buffers["velocity"][name]
            velocity *= self.momentum
            velocity += grad
            grad = grad + self.momentum * velocity if self.nesterov else velocity
        param -= lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with L2 weight decay added to the gradient, like torch's Adam.

    At step ``t`` (1-based), with ``g`` the gradient (plus ``weight_decay * p`` for weights)::

        m = m + (1 - beta1) * (g - m)          # = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    params : Mapping[str, np.ndarray]
        Name -> parameter array, updated in place.
    lr : float, default 1e-3
        Learning rate (``opt.lr`` may be changed between steps).
    betas : (beta1, beta2), default (0.9, 0.999)
        Decay rates of the moment averages, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator for stability.
    weight_decay : float, default 0.0
        L2 factor for weights (not biases).
    """

    buffer_names = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_fraction("betas[0]", betas[0]), _fraction("betas[1]", betas[1]))
        self.eps = _non_negative("eps", eps)
        super().__init__(params, lr, weight_decay)

    def _update(self, name, param, grad, lr):
        beta1, beta2 = self.betas
        if self.weight_decay and decays(param):
            if self.decoupled:
                param *= 1.0 - lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * param
        exp_avg = self.buffers["exp_avg"][name]
        exp_avg_sq = self.buffers["exp_avg_sq"][name]
        exp_avg += (1.0 - beta1) * (grad - exp_avg)  # torch's lerp_, same rounding
        exp_avg_sq *= beta2
        exp_avg_sq += (1.0 - beta2) * grad * grad
        # Python floats (self.steps is an int): NumPy scalars here would promote float32.
        bias_correction1 = 1.0 - beta1 ** self.steps
        bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** self.steps)
        denom = np.sqrt(exp_avg_sq)
        denom /= bias_correction2_sqrt
        denom += self.eps
        np.divide(exp_avg, denom, out=denom)
        denom *= lr / bias_correction1
        param -= denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), like torch's AdamW.

    Before the Adam update, weights (not biases) shrink: ``p *= 1 - lr * weight_decay``;
    the gradient itself is not changed.

    Parameters
    ----------
    params, lr, betas, eps
        As for :class:`Adam`.
    weight_decay : float, default 0.01
        Decoupled decay factor for weights (not biases).
    """

    decoupled = True

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


def make_optimizer(name: str, params: Mapping[str, np.ndarray], *, lr: float, momentum: float,
                   nesterov: bool, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                   eps: float = 1e-8) -> Optimizer:
    """Build the optimizer called ``name`` (one of :data:`OPTIMIZERS`).

    The arguments an optimizer does not use are ignored, so one config serves all three.

    Parameters
    ----------
    name : {"sgd", "adam", "adamw"}
    params : Mapping[str, np.ndarray]
        Name -> parameter array, updated in place.
    lr, weight_decay : float
    momentum : float
        For SGD.
    nesterov : bool
        For SGD.
    betas : (beta1, beta2), default (0.9, 0.999)
        For Adam/AdamW.
    eps : float, default 1e-8
        For Adam/AdamW.

    Returns
    -------
    Optimizer
        An :class:`SGD`, :class:`Adam` or :class:`AdamW`.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`OPTIMIZERS`.
    """
    if name == "sgd":
        return SGD(params, lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if name == "adam":
        return Adam(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


# --- checks ----------------------------------------------------------------------------


def _checked_params(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(params, Mapping) or not params:
        raise ValueError("params must be a non-empty dict of name -> np.ndarray")
    for name, param in params.items():
        if not isinstance(param, np.ndarray) or param.dtype.kind != "f":
            raise ValueError(f"params[{name!r}] must be a floating-point np.ndarray, got {_describe(param)}")
        if not param.flags.writeable:
            raise ValueError(f"params[{name!r}] is read-only; the optimizer updates it in place")
    return dict(params)  # our own dict of the caller's arrays: same objects, updated in place


def _check_same_keys(what: str, given: Mapping, expected: Mapping) -> None:
    if not isinstance(given, Mapping):
        raise ValueError(f"{what} must be a dict, got {type(given).__name__}")
    missing = [key for key in expected if key not in given]
    extra = [key for key in given if key not in expected]
    if missing or extra:
        parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + \
                ([f"unexpected {', '.join(map(repr, extra))}"] if extra else [])
        raise ValueError(f"{what} keys do not match the parameters: {'; '.join(parts)}")


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"shape {value.shape} dtype {value.dtype}"
    return type(value).__name__


def _non_negative(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value
