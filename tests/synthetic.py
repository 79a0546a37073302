"""Synthetic inputs shared by tests."""

from __future__ import annotations

import numpy as np


def mnist_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Normalised-MNIST-looking images: a flat background (exact ties) and a few strokes."""
    x = np.full((n, 1, 28, 28), -0.4242, dtype=np.float32)
    for image in x:
        for _ in range(3):
            r, c = rng.integers(4, 22, size=2)
            image[0, r:r + 3, c:c + rng.integers(3, 8)] = 2.8215
    return x
