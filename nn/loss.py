"""Softmax and the fused softmax + cross-entropy loss (log-sum-exp, numerically stable)."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """``logits - logsumexp(logits)`` along ``axis``; finite for any finite logits.

    Parameters
    ----------
    logits : numpy.ndarray
    axis : int, default -1

    Returns
    -------
    numpy.ndarray
        Log-probabilities, the shape of ``logits``.
    """
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities along ``axis`` (sum to 1); the max is subtracted first so exp never overflows.

    Parameters
    ----------
    logits, axis
        As for :func:`log_softmax`.

    Returns
    -------
    numpy.ndarray
        Probabilities, the shape of ``logits``, summing to 1 along ``axis``.
    """
    exps = np.exp(logits - logits.max(axis=axis, keepdims=True))
    exps /= exps.sum(axis=axis, keepdims=True)
    return exps


REDUCTIONS = ("mean", "sum")


class SoftmaxCrossEntropy:
    """Cross-entropy of softmax(logits) against integer class labels, averaged or summed.

    ``loss = sum_n( logsumexp(logits[n]) - logits[n, labels[n]] ) / D`` and its gradient
    ``dlogits = (softmax(logits) - onehot(labels)) / D``, computed together because the
    fused form is both cheaper and stable. ``D`` is the batch size for ``reduction="mean"``
    and 1 for ``reduction="sum"``.

    With ``"sum"`` the gradient grows with the batch, so a learning rate means ``batch_size``
    times more than with ``"mean"``: SGD at ``lr`` with ``"sum"`` takes exactly the step of
    ``"mean"`` at ``lr * batch_size`` (the convention of the tutorial this project follows).

    ``batch_size`` (default N) is the whole batch when the N rows given are a shard of it:
    with ``"mean"`` both loss and gradient are divided by it, so that the shards' losses add
    up to the batch's and their gradient rows are exactly those of the whole batch
    (``nn.DataParallel.forward_backward``). A sum needs no divisor: shards' sums add up as
    they are, and ``batch_size`` is only checked.

    Parameters
    ----------
    reduction : {"mean", "sum"}
        How the per-image losses (and their gradients) combine over the batch.

    Shape
    -----
    logits : (N, K) float; labels : (N,) ints in [0, K)
    -> (loss: float, dlogits: (N, K) in the dtype of ``logits``)
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        self.reduction = reduction

    def __repr__(self) -> str:
        return f"SoftmaxCrossEntropy(reduction={self.reduction!r})"

    def __call__(self, logits: np.ndarray, labels: np.ndarray,
                 batch_size: int | None = None) -> tuple[float, np.ndarray]:
        return self.forward(logits, labels, batch_size)

    def summed(self, loss: float, n: int) -> float:
        """The sum over the ``n`` images of a batch whose loss this returned as ``loss``.

        A trainer adds these up and divides by the images seen, so that the loss it reports
        is the mean per image whatever the reduction.
        """
        return loss if self.reduction == "sum" else loss * n

    def forward(self, logits: np.ndarray, labels: np.ndarray,
                batch_size: int | None = None) -> tuple[float, np.ndarray]:
        """Loss and gradient of one batch, or of one shard of a batch of ``batch_size``.

        Parameters
        ----------
        logits : (N, K) float
        labels : (N,) int in [0, K)
        batch_size : int, optional
            Rows in the whole batch (>= N; default N).

        Returns
        -------
        loss : float
            Summed (``"sum"``) or divided by ``batch_size`` (``"mean"``).
        dlogits : (N, K), the dtype of ``logits``
            d loss / d logits.
        """
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
        loss = -float(log_probs[rows, labels].sum(dtype=np.float64))
        dlogits = np.exp(log_probs)
        dlogits[rows, labels] -= 1
        if self.reduction == "mean":
            loss /= total
            dlogits /= total
        return loss, dlogits
