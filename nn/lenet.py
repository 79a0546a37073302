"""LeNet-5 (LeCun et al., 1998) as used on MNIST: two conv/pool stages, three dense layers."""

from __future__ import annotations

import numpy as np

from nn.activations import LeakyReLU, ReLU, Sigmoid, Tanh
from nn.conv import Conv2d
from nn.dropout import Dropout
from nn.init import BIAS_SCHEMES, SCHEMES
from nn.linear import Flatten, Linear
from nn.module import Module, Sequential
from nn.pool import AvgPool2d, MaxPool2d

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
POOLS = ("max", "avg")


def _activation(name: str, leaky_slope: float) -> Module:
    if name == "relu":
        return ReLU()
    if name == "leaky_relu":
        return LeakyReLU(leaky_slope)
    if name == "tanh":
        return Tanh()
    return Sigmoid()


def _activation_and_pool(stage: int, activation: str, leaky_slope: float, pooling) -> dict[str, Module]:
    """``act<stage>`` then ``pool<stage>``, or the other way round when that is exactly equal.

    A max pool picks one value per window, and ReLU / LeakyReLU are non-decreasing and
    piecewise linear, so ``act(maxpool(x)) == maxpool(act(x))`` bit for bit, gradients
    included (where ReLU zeroes a window's winner it zeroes its gradient either way). Pooling
    first runs the activation on a quarter of the values: ~6% of a training step.
    """
    act, pool = _activation(activation, leaky_slope), pooling(2, 2)
    if pooling is MaxPool2d and activation in ("relu", "leaky_relu"):
        return {f"pool{stage}": pool, f"act{stage}": act}
    return {f"act{stage}": act, f"pool{stage}": pool}


def lenet5(*, activation: str = "relu", pool: str = "max", channels=(6, 16), hidden=(120, 84),
           num_classes: int = 10, init: str = "he_normal", bias_init: str = "zeros", dropout: float = 0.0,
           leaky_slope: float = 0.01, rng: np.random.Generator, dtype=np.float32) -> Sequential:
    """Build LeNet-5 for 1x28x28 inputs.

    ::

        conv1  Conv2d(1, c1, 5, padding=2)   (N, 1, 28, 28) -> (N, c1, 28, 28)
        act1, pool1 (2x2, stride 2; pool first when exact)   -> (N, c1, 14, 14)
        conv2  Conv2d(c1, c2, 5)                             -> (N, c2, 10, 10)
        act2, pool2                                          -> (N, c2, 5, 5)
        flatten                                              -> (N, c2*25)
        fc1 Linear(c2*25, h1), act3, [drop1], fc2 Linear(h1, h2), act4, [drop2],
        fc3 Linear(h2, num_classes)                          -> (N, num_classes) logits

    Parameters
    ----------
    activation : {"relu", "leaky_relu", "tanh", "sigmoid"}, default "relu"
        ``"leaky_relu"`` with slope ``leaky_slope``.
    pool : {"max", "avg"}, default "max"
    channels : (c1, c2), default (6, 16)
        Feature maps of the two conv layers.
    hidden : (h1, h2), default (120, 84)
        Widths of the two hidden dense layers.
    num_classes : int, default 10
        Outputs of fc3.
    init : str, default "he_normal"
        Weight initializer (``nn.init.SCHEMES``).
    bias_init : {"zeros", "randn"}, default "zeros"
        Bias initializer (``nn.init.BIAS_SCHEMES``); each layer draws its bias after its weight.
    dropout : float in [0, 1), default 0.0
        Probability for drop1/drop2 after act3/act4; 0 leaves them out.
    leaky_slope : float, default 0.01
    rng : numpy.random.Generator
        For the weights and the dropout masks.
    dtype : float32 (default) or float64

    Returns
    -------
    Sequential
        The layers named as above, in training mode.

    Raises
    ------
    TypeError
        If ``rng`` is not a ``numpy.random.Generator``.
    ValueError
        If ``activation``, ``pool``, ``init`` or ``bias_init`` is not one of the names above, or
        ``dropout`` is outside [0, 1).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if init not in SCHEMES:
        raise ValueError(f"init must be one of {', '.join(SCHEMES)}, got {init!r}")
    if bias_init not in BIAS_SCHEMES:
        raise ValueError(f"bias_init must be one of {', '.join(BIAS_SCHEMES)}, got {bias_init!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    c1, c2 = (int(c) for c in channels)
    h1, h2 = (int(h) for h in hidden)
    pooling = MaxPool2d if pool == "max" else AvgPool2d
    dense = dict(init=init, bias_init=bias_init, rng=rng, dtype=dtype)
    layers: dict[str, Module] = {"conv1": Conv2d(1, c1, 5, padding=2, **dense)}
    layers.update(_activation_and_pool(1, activation, leaky_slope, pooling))
    layers["conv2"] = Conv2d(c1, c2, 5, **dense)
    layers.update(_activation_and_pool(2, activation, leaky_slope, pooling))
    layers.update({
        "flatten": Flatten(),
        "fc1": Linear(c2 * 5 * 5, h1, **dense),
        "act3": _activation(activation, leaky_slope),
    })
    if dropout > 0:
        layers["drop1"] = Dropout(dropout, rng=rng)
    layers["fc2"] = Linear(h1, h2, **dense)
    layers["act4"] = _activation(activation, leaky_slope)
    if dropout > 0:
        layers["drop2"] = Dropout(dropout, rng=rng)
    layers["fc3"] = Linear(h2, int(num_classes), **dense)
    return Sequential(**layers)


def feature_maps(model: Sequential, x: np.ndarray,
                 layers=("conv1", "conv2")) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run ``model`` in eval mode and keep the outputs of the named layers on the way.

    :meth:`Sequential.forward_collect` in eval mode: one forward pass, so the logits are
    exactly ``model.forward(x)``'s. The model's train/eval mode is restored.

    Parameters
    ----------
    model : Sequential
        Such as :func:`lenet5` builds.
    x : (N, 1, 28, 28) float
        Normalized like the training data.
    layers : tuple of str, default ("conv1", "conv2")
        Names of the layers whose outputs to keep.

    Returns
    -------
    logits : (N, num_classes)
        The model's output.
    maps : dict of str to numpy.ndarray
        ``{name: output of that layer}``. For :func:`lenet5`, ``conv1``: (N, c1, 28, 28) and
        ``conv2``: (N, c2, 10, 10), both before their activation (negative values included).

    Shape
    -----
    x : (N, 1, 28, 28) -> logits : (N, num_classes); maps[name] : that layer's output.
    """
    was_training = model.training
    model.eval()
    try:
        return model.forward_collect(x, layers)
    finally:
        model.train(was_training)
