"""Finite-difference gradient checking (float64).

``numerical_gradient`` perturbs one coordinate of an array in place, re-evaluates a scalar
function, and restores the coordinate exactly; ``adaptive_numerical_gradient`` picks the step
per coordinate for deep smooth functions (a whole network); ``relative_error`` compares an
analytic gradient with the numerical one, element by element, on a scale-aware basis.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np


def central_difference(f: Callable[[], float], array: np.ndarray, index: tuple[int, ...],
                       step: float, order: int = 2) -> float:
    """d f / d array[index] by a central difference, perturbing ``array`` in place and
    restoring the coordinate exactly afterwards.

    order 2: ``(f(a+h) - f(a-h)) / 2h``, error O(h^2);
    order 4: ``(f(a-2h) - 8 f(a-h) + 8 f(a+h) - f(a+2h)) / 12h``, error O(h^4).
    """
    original = array[index]

    def f_at(offset: float) -> float:
        array[index] = original + offset * step
        return float(f())

    try:
        # Differences first: where f does not depend on the coordinate at all, equal values
        # cancel exactly and the estimate is exactly 0 (a weighted sum of the four values
        # would leave a rounding residue).
        if order == 2:
            return (f_at(1) - f_at(-1)) / (2 * step)
        if order == 4:
            return (8 * (f_at(1) - f_at(-1)) - (f_at(2) - f_at(-2))) / (12 * step)
        raise ValueError(f"order must be 2 or 4, got {order}")
    finally:
        array[index] = original  # the stored value, not original + h - h


def numerical_gradient(f: Callable[[], float], array: np.ndarray, eps: float = 1e-6,
                       indices: Iterable[tuple[int, ...]] | None = None, order: int = 2) -> np.ndarray:
    """Central differences ``(f(a + eps) - f(a - eps)) / (2 eps)`` for each coordinate of ``array``.

    Parameters
    ----------
    f : callable taking no argument and returning a float; it must read ``array`` (e.g. a
        layer's parameter, or an input the closure passes to the layer).
    array : float64 array, perturbed IN PLACE one coordinate at a time and restored exactly.
    eps : step.
    indices : coordinates to differentiate; all of them when None.
    order : 2 (the formula above) or 4 (see ``central_difference``).

    Returns
    -------
    grad : same shape as ``array``; coordinates not in ``indices`` are NaN.
    """
    assert array.dtype == np.float64, "finite differences need float64"
    grad = np.full(array.shape, np.nan)
    for index in (np.ndindex(array.shape) if indices is None else indices):
        grad[index] = central_difference(f, array, index, eps, order)
    return grad


def adaptive_numerical_gradient(f: Callable[[], float], array: np.ndarray,
                                indices: Iterable[tuple[int, ...]] | None = None,
                                steps=(1e-2, 1e-3, 1e-4)) -> np.ndarray:
    """For SMOOTH ``f``: fourth-order central differences at several steps and, per
    coordinate, the estimate of the step that agrees best with the next smaller one.

    Why: in float64 a step h leaves a rounding error of about ``1e-16 |f| / h``, so a step of
    1e-6 cannot resolve a deep network's gradients below ~1e-4 to a relative 1e-6 (softmax
    classes of tiny probability, sigmoid layers). Larger steps remove the rounding error but
    add truncation error (O(h^4)); two consecutive steps agree only when neither dominates,
    so the best-agreeing pair picks a good step coordinate by coordinate (as numdifftools
    does). Not for kinked functions (ReLU, max pooling): a large step would cross a kink.

    Parameters and returns as ``numerical_gradient``.
    """
    assert array.dtype == np.float64, "finite differences need float64"
    grad = np.full(array.shape, np.nan)
    for index in (np.ndindex(array.shape) if indices is None else indices):
        estimates = [central_difference(f, array, index, step, order=4) for step in steps]
        disagreement = [abs(a - b) for a, b in zip(estimates, estimates[1:])]
        grad[index] = estimates[int(np.argmin(disagreement))]
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
