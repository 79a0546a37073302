"""Element-wise activations. Shape: any -> same shape, same dtype, same memory order.

NumPy ufuncs allocate outputs in the input's memory order (``order="K"``), so the batch-last
views our conv and pool layers return (see ``nn/im2col.py``) stay batch-last through these
layers at no cost.
"""

from __future__ import annotations

import numpy as np

from nn.module import Module


class ReLU(Module):
    """``max(x, 0)``; the gradient at 0 is taken as 0 (like PyTorch)."""

    def __init__(self) -> None:
        super().__init__()
        self._out: np.ndarray | None = None
        self._zeros: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        # np.maximum against a zero *array* is ~2.5x faster than against the scalar 0
        # (NumPy only vectorises the array-array loop). The zeros are private, never written,
        # and laid out like x (zeros_like keeps memory order) so the output is too.
        zeros = self._zeros
        if (zeros is None or zeros.shape != x.shape or zeros.dtype != x.dtype
                or zeros.flags.c_contiguous != x.flags.c_contiguous):
            zeros = self._zeros = np.zeros_like(x)
        # Keep the output, not a mask: one pass in forward (and eval), the mask in backward.
        self._out = np.maximum(x, zeros)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._out is None:
            raise RuntimeError("ReLU.backward called before forward")
        return np.multiply(dout, self._out > 0, dtype=dout.dtype)


class LeakyReLU(Module):
    """``x if x > 0 else negative_slope * x``.

    Parameters
    ----------
    negative_slope : float, default 0.01
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)
        self._positive: np.ndarray | None = None

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._positive = x > 0
        return np.where(self._positive, x, x * self.negative_slope)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._positive is None:
            raise RuntimeError("LeakyReLU.backward called before forward")
        return np.where(self._positive, dout, dout * self.negative_slope)


class Tanh(Module):
    """``tanh(x)``; derivative ``1 - tanh(x)**2``."""

    def __init__(self) -> None:
        super().__init__()
        self._out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._out = np.tanh(x)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._out is None:
            raise RuntimeError("Tanh.backward called before forward")
        return dout * (1 - self._out * self._out)


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``; derivative ``s * (1 - s)``.

    Computed as ``(1 + tanh(x / 2)) / 2`` (no overflow for large |x|).
    """

    def __init__(self) -> None:
        super().__init__()
        self._out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = np.tanh(x * 0.5)
        out += 1
        out *= 0.5
        self._out = out
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._out is None:
            raise RuntimeError("Sigmoid.backward called before forward")
        return dout * (self._out * (1 - self._out))
