"""Inverted dropout: zero activations at random while training, identity in eval mode."""

from __future__ import annotations

import numpy as np

from nn.module import Module


class Dropout(Module):
    """Inverted dropout: zero elements at random while training, identity in eval mode.

    In training, keep each element with probability ``1 - p`` and scale it by ``1 / (1 - p)``
    (so the expected activation is unchanged and eval mode needs no rescaling); in eval mode,
    return the input unchanged.

    Parameters
    ----------
    p : float in [0, 1), default 0.5
        Probability of zeroing an element.
    rng : numpy.random.Generator or None, default None
        Draws the masks (pass the run's generator so runs are reproducible); ``None`` uses
        a fresh, *unseeded* ``np.random.default_rng()``.

    Shape
    -----
    x : any -> out : same shape and dtype.
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability p must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng() if rng is None else rng
        self._scale_mask: np.ndarray | None = None

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0.0:
            self._scale_mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64) >= self.p
        self._scale_mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._scale_mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._scale_mask is None:  # eval mode or p == 0: the layer was the identity
            return dout
        return dout * self._scale_mask
