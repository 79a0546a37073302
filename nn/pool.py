"""Max and average pooling over (possibly overlapping, possibly padded) 2-D windows."""

from __future__ import annotations

import numpy as np

from nn.im2col import PaddedBuffer, output_size, pair, window
from nn.module import Module


# A (left, right) pair of floats viewed as one complex number (real, imag).
_PAIR_DTYPES = {np.dtype(np.float32): np.complex64, np.dtype(np.float64): np.complex128}


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
        return dxp[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)


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
        xc = x.transpose(1, 0, 2, 3)
        if self.kernel_size == (2, 2) and self.stride == (2, 2) and self.padding == (0, 0):
            return self._forward_2x2(xc, out_hw, masks=self.training)
        xp = PaddedBuffer(-np.inf).pad(xc, self.padding, xc.dtype)
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
        return best.transpose(1, 0, 2, 3)

    def _forward_2x2(self, xc: np.ndarray, out_hw: tuple[int, int], masks: bool) -> np.ndarray:
        # Pairwise maxima of strided views: far faster than reshape(...).max(axis=...).
        # First the horizontal pairs, then the vertical: that order keeps PyTorch's
        # first-maximum-in-row-major-order winner (a, b / c, d: a > b > c > d on ties).
        c, n, h, w = xc.shape
        ho, wo = out_hw
        if not masks:
            # Eval needs the values only, and any pairing order gives the same maxima: the
            # vertical pairs first (whole contiguous rows), then the horizontal pairs of a
            # half-size array; 2x faster than the pair split below (measured at batch 128-500).
            # A later backward recomputes the winners from xc.
            rows = np.maximum(xc[:, :, 0:2 * ho:2], xc[:, :, 1:2 * ho:2])
            out = np.maximum(rows[..., 0:2 * wo:2], rows[..., 1:2 * wo:2])
            self._cache = ("2x2 lazy", xc, out_hw)
            return out.transpose(1, 0, 2, 3)
        if xc.strides[-1] == xc.itemsize and h == 2 * ho and w == 2 * wo and xc.dtype in _PAIR_DTYPES:
            # Rows contiguous and even (as in our convolutions' outputs, even when their rows
            # are views cropped out of wider ones): each row is a run of (left, right) pairs;
            # viewing each pair as one complex number splits them with two fast copies, after
            # which the comparisons run on contiguous memory (3-5x faster than on stride-2
            # views).
            pairs = xc.view(_PAIR_DTYPES[xc.dtype])
            left, right = pairs.real.copy(), pairs.imag.copy()
            left_wins = (left >= right).reshape(-1)
            rows = np.maximum(left, right, out=left).reshape(c * n * ho, 2, wo)
            top, bottom = rows[:, 0], rows[:, 1]
            out = np.maximum(top, bottom).reshape(c, n, ho, wo)
            self._cache = ("2x2 pairs", xc.shape, left_wins, top >= bottom)
            return out.transpose(1, 0, 2, 3)
        a, b = xc[:, :, 0:2 * ho:2, 0:2 * wo:2], xc[:, :, 0:2 * ho:2, 1:2 * wo:2]
        cc, d = xc[:, :, 1:2 * ho:2, 0:2 * wo:2], xc[:, :, 1:2 * ho:2, 1:2 * wo:2]
        top, bottom = np.maximum(a, b), np.maximum(cc, d)
        out = np.maximum(top, bottom)
        self._cache = ("2x2", xc.shape, a >= b, cc >= d, top >= bottom)
        return out.transpose(1, 0, 2, 3)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("MaxPool2d.backward called before forward")
        doutc = dout.transpose(1, 0, 2, 3)
        if self._cache[0] == "2x2 lazy":
            self._forward_2x2(*self._cache[1:], masks=True)
        if self._cache[0] == "2x2 pairs":
            return self._backward_2x2_pairs(doutc)
        if self._cache[0] == "2x2":
            return self._backward_2x2(doutc)
        _, in_hw, padded_shape, out_hw, argbest = self._cache
        dxp = np.zeros(padded_shape, dtype=dout.dtype)
        for k, (i, j) in enumerate(self._offsets()):
            dxp[window(i, j, self.stride, out_hw)] += doutc * (argbest == k)
        return self._crop(dxp, in_hw)

    def _backward_2x2_pairs(self, doutc: np.ndarray) -> np.ndarray:
        # Exactly one of each pair receives the gradient g: the winner gets g * 1 and the
        # loser g - g * 1 = 0 (or g * 0 and g - 0 = g): exact in floating point.
        _, in_shape, left_wins, top_wins = self._cache
        c, n, ho, wo = doutc.shape
        if doutc.dtype not in _PAIR_DTYPES:  # e.g. integer gradients
            doutc = doutc.astype(np.float64)
        dtype = doutc.dtype
        drows = np.empty((c * n * ho, 2, wo), dtype=dtype)
        dout2d = doutc.reshape(c * n * ho, wo)
        np.multiply(dout2d, top_wins, out=drows[:, 0])
        np.subtract(dout2d, drows[:, 0], out=drows[:, 1])
        drows = drows.reshape(-1)
        dx = np.empty(drows.size, dtype=_PAIR_DTYPES[dtype])
        dleft = np.multiply(drows, left_wins)
        dx.real = dleft
        dx.imag = np.subtract(drows, dleft, out=dleft)
        return dx.view(dtype).reshape(in_shape).transpose(1, 0, 2, 3)

    def _backward_2x2(self, doutc: np.ndarray) -> np.ndarray:
        _, in_shape, a_wins, c_wins, top_wins = self._cache
        ho, wo = doutc.shape[2:]
        full = in_shape[2] == 2 * ho and in_shape[3] == 2 * wo
        dx = (np.empty if full else np.zeros)(in_shape, dtype=doutc.dtype)
        bottom_wins = ~top_wins
        np.multiply(doutc, top_wins & a_wins, out=dx[:, :, 0:2 * ho:2, 0:2 * wo:2])
        np.multiply(doutc, top_wins & ~a_wins, out=dx[:, :, 0:2 * ho:2, 1:2 * wo:2])
        np.multiply(doutc, bottom_wins & c_wins, out=dx[:, :, 1:2 * ho:2, 0:2 * wo:2])
        np.multiply(doutc, bottom_wins & ~c_wins, out=dx[:, :, 1:2 * ho:2, 1:2 * wo:2])
        return dx.transpose(1, 0, 2, 3)


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
        xc = x.transpose(1, 0, 2, 3)
        xp = PaddedBuffer(0.0).pad(xc, self.padding, xc.dtype)
        offsets = self._offsets()
        total = xp[window(*offsets[0], self.stride, out_hw)].copy()
        for i, j in offsets[1:]:
            total += xp[window(i, j, self.stride, out_hw)]
        total *= total.dtype.type(1.0 / len(offsets))
        self._cache = (x.shape[2:], xp.shape, out_hw)
        return total.transpose(1, 0, 2, 3)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("AvgPool2d.backward called before forward")
        in_hw, padded_shape, out_hw = self._cache
        share = dout.transpose(1, 0, 2, 3) * dout.dtype.type(1.0 / len(self._offsets()))
        dxp = np.zeros(padded_shape, dtype=dout.dtype)
        for i, j in self._offsets():
            dxp[window(i, j, self.stride, out_hw)] += share
        return self._crop(dxp, in_hw)
