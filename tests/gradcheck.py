"""Finite-difference gradient checking (float64).

``numerical_gradient`` perturbs one coordinate of an array in place, re-evaluates a scalar
function, and restores the coordinate exactly; ``relative_error`` compares an analytic
gradient with the numerical one on a scale-aware basis.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np


def numerical_gradient(f: Callable[[], float], array: np.ndarray, eps: float = 1e-6,
                       indices: Iterable[tuple[int, ...]] | None = None) -> np.ndarray:
    """Central differences ``(f(a + eps) - f(a - eps)) / (2 eps)`` for each coordinate of ``array``.

    Parameters
    ----------
    f : callable taking no argument and returning a float; it must read ``array`` (e.g. a
        layer's parameter, or an input the closure passes to the layer).
    array : float64 array, perturbed IN PLACE one coordinate at a time and restored exactly.
    eps : step.
    indices : coordinates to differentiate; all of them when None.

    Returns
    -------
    grad : same shape as ``array``; coordinates not in ``indices`` are NaN.
    """
    assert array.dtype == np.float64, "finite differences need float64"
    grad = np.full(array.shape, np.nan)
    coordinates = np.ndindex(array.shape) if indices is None else indices
    for index in coordinates:
        original = array[index]
        array[index] = original + eps
        plus = float(f())
        array[index] = original - eps
        minus = float(f())
        array[index] = original  # the stored value, not original + eps - eps
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def sample_indices(shape: tuple[int, ...], count: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Up to ``count`` distinct random coordinates of an array of ``shape`` (all if fewer)."""
    size = int(np.prod(shape))
    flat = rng.choice(size, size=min(count, size), replace=False)
    return [tuple(int(i) for i in np.unravel_index(k, shape)) for k in flat]


def relative_error(analytic: np.ndarray, numerical: np.ndarray, floor: float = 1e-8) -> float:
    """``max |a - b| / max(floor, |a| + |b|)`` over the coordinates where ``numerical`` is
    not NaN (those that were differentiated).

    The floor keeps coordinates whose true gradient is (near) zero from dividing noise by
    noise: there an absolute error below ``tolerance * floor`` passes.
    """
    analytic, numerical = np.broadcast_arrays(np.asarray(analytic, np.float64), numerical)
    checked = ~np.isnan(numerical)
    assert checked.any(), "no coordinate was differentiated"
    a, b = analytic[checked], numerical[checked]
    return float(np.max(np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b))))
