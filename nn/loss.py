"""Softmax and the fused softmax + cross-entropy loss (log-sum-exp, numerically stable)."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """``logits - logsumexp(logits)`` along ``axis``; finite for any finite logits."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities along ``axis`` (sum to 1); the max is subtracted first so exp never overflows."""
    exps = np.exp(logits - logits.max(axis=axis, keepdims=True))
    exps /= exps.sum(axis=axis, keepdims=True)
    return exps


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer class labels.

    ``loss = mean_n( logsumexp(logits[n]) - logits[n, labels[n]] )`` and its gradient
    ``dlogits = (softmax(logits) - onehot(labels)) / N``, computed together because the
    fused form is both cheaper and stable.

    ``batch_size`` (default N) is the count both are divided by: a shard of a larger batch
    passes the whole batch's size, so that its loss adds up with the other shards' and its
    gradient rows are exactly those of the whole batch (``nn.DataParallel.forward_backward``).

    Shape
    -----
    logits : (N, K) float; labels : (N,) ints in [0, K)
    -> (loss: float, dlogits: (N, K) in the dtype of ``logits``)
    """

    def __call__(self, logits: np.ndarray, labels: np.ndarray,
                 batch_size: int | None = None) -> tuple[float, np.ndarray]:
        return self.forward(logits, labels, batch_size)

    def forward(self, logits: np.ndarray, labels: np.ndarray,
                batch_size: int | None = None) -> tuple[float, np.ndarray]:
        labels = np.asarray(labels)
        if logits.ndim != 2 or labels.shape != (logits.shape[0],):
            raise ValueError(f"expected logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        n, k = logits.shape
        if n and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"labels must be in [0, {k}), got range [{labels.min()}, {labels.max()}]")
        total = n if batch_size is None else int(batch_size)
        if total < n:
            raise ValueError(f"batch_size must be at least the {n} rows given, got {batch_size}")
        rows = np.arange(n)
        log_probs = log_softmax(logits, axis=1)
        loss = -float(log_probs[rows, labels].sum(dtype=np.float64)) / total
        dlogits = np.exp(log_probs)
        dlogits[rows, labels] -= 1
        dlogits /= total
        return loss, dlogits
