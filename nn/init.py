"""Weight initializers, all driven by an explicit ``numpy.random.Generator``.

Values are drawn in float64 and then cast, so float32 and float64 models built from the same
seed hold the same weights up to rounding (useful for comparing them). Biases start at zero
(:data:`BIAS_SCHEMES`), or drawn from N(0, 1) as the original tutorial drew them.

Fans follow PyTorch: for a weight ``(C_out, C_in, kH, kW)`` fan_in = C_in*kH*kW and
fan_out = C_out*kH*kW; for ``(out, in)`` fan_in = in, fan_out = out.
"""

from __future__ import annotations

import math

import numpy as np

SCHEMES = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "randn")
BIAS_SCHEMES = ("zeros", "randn")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a Linear ``(out, in)`` or Conv ``(C_out, C_in, kH, kW)`` weight."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight of at least 2 dimensions, got shape {shape}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def initialize(array_shape: tuple[int, ...], scheme: str, rng: np.random.Generator,
               fan_in: int | None = None, fan_out: int | None = None,
               dtype=np.float32) -> np.ndarray:
    """A new weight array drawn from ``scheme``.

    Parameters
    ----------
    array_shape : tuple of int
        Shape of the weight.
    scheme : str
        One of::

            "he_normal"      N(0, 2 / fan_in)                 (Kaiming, for ReLU)
            "he_uniform"     U(-sqrt(6 / fan_in), +sqrt(6 / fan_in))
            "glorot_normal"  N(0, 2 / (fan_in + fan_out))     (Xavier, for tanh/sigmoid)
            "glorot_uniform" U(-sqrt(6 / (fan_in + fan_out)), +...)
            "randn"          N(0, 1)                          (the original tutorial's)

    rng : numpy.random.Generator
        The generator to draw from (the only source of randomness).
    fan_in, fan_out : int, optional
        Default to ``fans(array_shape)``.
    dtype : numpy dtype, default float32
        Dtype of the result.

    Returns
    -------
    numpy.ndarray
        A new array of shape ``array_shape`` and ``dtype``.

    Raises
    ------
    ValueError
        If ``scheme`` is not one of ``SCHEMES``.
    TypeError
        If ``rng`` is not a ``numpy.random.Generator``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    shape = tuple(int(s) for s in array_shape)
    default_in, default_out = fans(shape) if len(shape) >= 2 else (shape[0], shape[0])
    fan_in = default_in if fan_in is None else fan_in
    fan_out = default_out if fan_out is None else fan_out
    if scheme == "randn":
        values = rng.standard_normal(shape)
    elif scheme == "he_normal":
        values = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    elif scheme == "he_uniform":
        bound = math.sqrt(6.0 / fan_in)
        values = rng.uniform(-bound, bound, shape)
    elif scheme == "glorot_normal":
        values = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape)
    else:  # glorot_uniform
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        values = rng.uniform(-bound, bound, shape)
    return values.astype(dtype)


def he_normal(shape, rng, dtype=np.float32):
    return initialize(shape, "he_normal", rng, dtype=dtype)


def he_uniform(shape, rng, dtype=np.float32):
    return initialize(shape, "he_uniform", rng, dtype=dtype)


def glorot_normal(shape, rng, dtype=np.float32):
    return initialize(shape, "glorot_normal", rng, dtype=dtype)


def glorot_uniform(shape, rng, dtype=np.float32):
    return initialize(shape, "glorot_uniform", rng, dtype=dtype)


def randn(shape, rng, dtype=np.float32):
    return initialize(shape, "randn", rng, dtype=dtype)


def zeros(shape, dtype=np.float32):
    """Biases start at zero."""
    return np.zeros(shape, dtype=dtype)


def initialize_bias(size: int, scheme: str, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """A new bias vector: zeros, or N(0, 1) draws as the original tutorial's layers made them.

    Parameters
    ----------
    size : int
        Output channels or features.
    scheme : {"zeros", "randn"}
        ``"zeros"`` draws nothing from ``rng``, so a model built with it takes the same
        weights from a seed as one built before biases could be drawn.
    rng : numpy.random.Generator
    dtype : numpy dtype, default float32

    Returns
    -------
    (size,) numpy.ndarray
    """
    if scheme not in BIAS_SCHEMES:
        raise ValueError(f"unknown bias init {scheme!r}; expected one of {', '.join(BIAS_SCHEMES)}")
    if scheme == "zeros":
        return zeros(size, dtype=dtype)
    return rng.standard_normal(size).astype(dtype)
