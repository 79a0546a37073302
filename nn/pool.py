"""Max and average pooling over (possibly overlapping, possibly padded) 2-D windows."""

from __future__ import annotations

import numpy as np

from nn.im2col import PaddedBuffer, batch_first, batch_last, output_size, pair, window
from nn.module import Module


class _Pool2d(Module):
    """Shared geometry: kernel, stride (defaults to the kernel), padding, output size."""

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            # As in PyTorch: a window made only of padding would have no input to pool.
            raise ValueError(f"padding {self.padding} must be at most half of kernel_size {self.kernel_size}")
        self._cache = None

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _geometry(self, x: np.ndarray) -> tuple[int, int]:
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects (N, C, H, W), got shape {x.shape}")
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_hw = (output_size(x.shape[2], kh, sh, ph), output_size(x.shape[3], kw, sw, pw))
        if min(out_hw) < 1:
            raise ValueError(f"input {x.shape[2]}x{x.shape[3]} too small for kernel {kh}x{kw}")
        return out_hw

    def _offsets(self):
        kh, kw = self.kernel_size
        return [(i, j) for i in range(kh) for j in range(kw)]

    def _crop(self, dxp: np.ndarray, in_hw: tuple[int, int]) -> np.ndarray:
        (ph, pw), (h, w) = self.padding, in_hw
        return batch_first(dxp[:, ph:ph + h, pw:pw + w])


class MaxPool2d(_Pool2d):
    """Maximum over each window; padding is -inf (never selected).

    Parameters
    ----------
    kernel_size : int or (kH, kW)
    stride : int or (sH, sW), default ``kernel_size``
        Smaller than the kernel = overlapping.
    padding : int or (pH, pW), default 0
        At most half the kernel.

    Shape
    -----
    x : (N, C, H, W) -> out : (N, C, H_out, W_out),
    ``H_out = floor((H + 2*pH - kH) / sH) + 1`` (same for W).

    Notes
    -----
    The gradient of each window goes to exactly one input: the first maximum in row-major
    window order, like PyTorch. (Splitting it among ties would be wrong: on normalised MNIST
    whole windows of background share one value.) Overlapping windows add their gradients.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        out_hw = self._geometry(x)
        xb = batch_last(x)
        if self.kernel_size == (2, 2) and self.stride == (2, 2) and self.padding == (0, 0):
            return self._forward_2x2(xb, out_hw, masks=self.training)
        xp = PaddedBuffer(-np.inf).pad(xb, self.padding, xb.dtype)
        offsets = self._offsets()
        best = xp[window(*offsets[0], self.stride, out_hw)].copy()
        # Index of the winning offset; strict ">" keeps the first maximum on ties.
        argbest = np.zeros(best.shape, dtype=np.uint8 if len(offsets) < 256 else np.int32)
        for k, (i, j) in enumerate(offsets[1:], start=1):
            candidate = xp[window(i, j, self.stride, out_hw)]
            better = candidate > best
            np.copyto(argbest, k, where=better)
            np.copyto(best, candidate, where=better)
        self._cache = ("general", x.shape[2:], xp.shape, out_hw, argbest)
        return batch_first(best)

    def _forward_2x2(self, xb: np.ndarray, out_hw: tuple[int, int], masks: bool) -> np.ndarray:
        # Pairwise maxima of strided views (far faster than reshape(...).max(axis=...)); in
        # batch-last memory each view is made of runs of N values. First the horizontal
        # pairs, then the vertical: that order keeps PyTorch's first-maximum-in-row-major
        # winner (a, b / c, d: a > b > c > d on ties).
        ho, wo = out_hw
        left, right = xb[:, :2 * ho, 0:2 * wo:2], xb[:, :2 * ho, 1:2 * wo:2]
        pairs = np.maximum(left, right)
        top, bottom = pairs[:, 0::2], pairs[:, 1::2]
        if masks:
            self._cache = ("2x2", xb.shape, left >= right, top >= bottom)
        else:  # eval needs the values only; a later backward recomputes the winners from xb
            self._cache = ("2x2 lazy", xb, out_hw)
        return batch_first(np.maximum(top, bottom))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("MaxPool2d.backward called before forward")
        doutb = batch_last(dout)
        if self._cache[0] == "2x2 lazy":
            self._forward_2x2(*self._cache[1:], masks=True)
        if self._cache[0] == "2x2":
            return self._backward_2x2(doutb)
        _, in_hw, padded_shape, out_hw, argbest = self._cache
        dxp = np.zeros(padded_shape, dtype=dout.dtype)
        for k, (i, j) in enumerate(self._offsets()):
            dxp[window(i, j, self.stride, out_hw)] += doutb * (argbest == k)
        return self._crop(dxp, in_hw)

    def _backward_2x2(self, doutb: np.ndarray) -> np.ndarray:
        # Exactly one of each pair receives the gradient g: the winner gets g * 1 and the
        # loser g - g * 1 = 0 (or g * 0 and g - 0 = g): exact in floating point.
        _, (c, h, w, n), left_wins, top_wins = self._cache
        ho, wo = doutb.shape[1:3]
        dpairs = np.empty((c, 2 * ho, wo, n), dtype=doutb.dtype)
        np.multiply(doutb, top_wins, out=dpairs[:, 0::2])
        np.subtract(doutb, dpairs[:, 0::2], out=dpairs[:, 1::2])
        dx = (np.empty if (h, w) == (2 * ho, 2 * wo) else np.zeros)((c, h, w, n), dtype=doutb.dtype)
        dleft = dx[:, :2 * ho, 0:2 * wo:2]
        np.multiply(dpairs, left_wins, out=dleft)
        np.subtract(dpairs, dleft, out=dx[:, :2 * ho, 1:2 * wo:2])
        return batch_first(dx)


class AvgPool2d(_Pool2d):
    """Mean over each window; padded zeros count in the mean (PyTorch's count_include_pad=True).

    Parameters
    ----------
    kernel_size, stride, padding
        As for :class:`MaxPool2d`: ``stride`` defaults to ``kernel_size``, ``padding`` (default
        0) is at most half the kernel.

    Shape
    -----
    x : (N, C, H, W) -> out : (N, C, H_out, W_out),
    ``H_out = floor((H + 2*pH - kH) / sH) + 1`` (same for W).
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        out_hw = self._geometry(x)
        xb = batch_last(x)
        xp = PaddedBuffer(0.0).pad(xb, self.padding, xb.dtype)
        offsets = self._offsets()
        total = xp[window(*offsets[0], self.stride, out_hw)].copy()
        for i, j in offsets[1:]:
            total += xp[window(i, j, self.stride, out_hw)]
        total *= total.dtype.type(1.0 / len(offsets))
        self._cache = (x.shape[2:], xp.shape, out_hw)
        return batch_first(total)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("AvgPool2d.backward called before forward")
        in_hw, padded_shape, out_hw = self._cache
        share = batch_last(dout) * dout.dtype.type(1.0 / len(self._offsets()))
        dxp = np.zeros(padded_shape, dtype=dout.dtype)
        for i, j in self._offsets():
            dxp[window(i, j, self.stride, out_hw)] += share
        return self._crop(dxp, in_hw)
