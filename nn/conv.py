"""2-D convolution (cross-correlation, like PyTorch) as im2col + one matrix product."""

from __future__ import annotations

import numpy as np

from nn.im2col import (PaddedBuffer, RowsBuffer, col2im, col2im_rows, im2col, im2col_rows, output_size,
                       pair, reshaped_view)
from nn.init import initialize
from nn.module import Module


class Conv2d(Module):
    """``out[n, o] = bias[o] + sum_c weight[o, c] (*) x[n, c]`` over zero-padded, strided windows.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (kH, kW)
    stride : int or (sH, sW), default 1
    padding : int or (pH, pW), default 0
        Zeros added on both sides of H and W.
    bias : bool, default True
    init : str, default "he_uniform"
        Weight initializer from ``nn.init.SCHEMES``.
    rng : numpy.random.Generator or None, default None
        Draws the weights; ``None`` draws from a fresh, *unseeded* ``np.random.default_rng()``
        (pass one for reproducible weights).
    dtype : float32 (default) or float64
        Inputs and output gradients are cast to it.

    Shape
    -----
    x : (N, C_in, H, W) -> out : (N, C_out, H_out, W_out), where
    ``H_out = floor((H + 2*pH - kH) / sH) + 1`` and ``W_out = floor((W + 2*pW - kW) / sW) + 1``.

    Attributes
    ----------
    params["weight"] : (C_out, C_in, kH, kW)
        Drawn from ``init`` with fan_in = C_in*kH*kW.
    params["bias"] : (C_out,)
        Zeros (absent when ``bias=False``).

    Notes
    -----
    The output is returned as an NCHW *view* of channel-major ``(C_out, N, H_out, W_out)``
    memory; the next layer's ``x.transpose(1, 0, 2, 3)`` is then contiguous again for free.
    Outputs and input gradients are fresh arrays; internal buffers are reused across calls
    with the same shapes and are never handed out.
    """

    # Columns are built and multiplied in chunks of the batch of about this many bytes, so
    # they are still in cache when multiplied. Measured (interleaved runs, 1 BLAS thread):
    # LeNet-5 training steps ~10% faster at batch 256 than unchunked, equal at batch 64.
    CHUNK_BYTES = 4 << 20
    # Output rows at least this wide use plain columns when nothing is scattered back
    # (see _wide_rows).
    PLAIN_MIN_WIDTH = 16

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, *, init: str = "he_uniform",
                 rng: np.random.Generator | None = None, dtype=np.float32) -> None:
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(f"channels must be >= 1, got {in_channels}, {out_channels}")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng() if rng is None else rng
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self._add_param("weight", initialize(shape, init, rng, dtype=self.dtype))
        if bias:
            self._add_param("bias", np.zeros(self.out_channels, dtype=self.dtype))
        self._padded = PaddedBuffer(0.0)  # stride > 1 path
        self._rows = RowsBuffer()          # stride 1 path
        self._cache = None

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'bias' in self.params}")

    def _buffer(self, name: str, shape: tuple[int, ...], fill: float | None = None) -> np.ndarray:
        """A private array reused while ``shape`` repeats (allocating and first-touching
        megabytes per batch costs as much as filling them); ``fill`` is written at
        allocation only."""
        buffer = self.__dict__.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != self.dtype:
            buffer = np.empty(shape, dtype=self.dtype) if fill is None else np.full(shape, fill, dtype=self.dtype)
            self.__dict__[name] = buffer
        return buffer

    def _chunk_images(self, values_per_image: int) -> int:
        """Images per chunk so one chunk's columns fit in cache (see ``CHUNK_BYTES``)."""
        return max(1, self.CHUNK_BYTES // (values_per_image * self.dtype.itemsize))

    def _wide_rows(self, out_w: int) -> bool:
        """Whether this forward gathers columns from a ``RowsBuffer`` (stride 1 only).

        Wide rows turn im2col and col2im into copies of long runs, at the price of ``Wp - Wo``
        junk columns per row in every product (1.14x the work for LeNet-5's conv1, 1.4x for
        conv2). When no column gradient will be scattered back (no input gradient, or eval)
        and rows are long, plain columns win: LeNet-5's conv1 (rows of 28, no input
        gradient) trains ~0.8 ms faster per batch-128 step with them. Short rows keep wide
        rows anyway: plain im2col copies rows of 10 values 2.4x slower.
        """
        scatters_back = self.training and self.input_grad
        return self.stride == (1, 1) and (scatters_back or out_w < self.PLAIN_MIN_WIDTH)

    def _source(self, x: np.ndarray):
        """The padded channel-major input, the output size, the padded size, the grid
        outputs are computed on, and whether it is in wide rows (see ``_wide_rows``).

        Wide rows: the row-run layout of ``RowsBuffer``, outputs on a ``Ho x Wp`` grid whose
        junk columns are dropped by a view. Otherwise plain im2col on a padded copy.
        """
        n, c, h, w = x.shape
        (kh, kw), stride, (ph, pw) = self.kernel_size, self.stride, self.padding
        out_hw = (output_size(h, kh, stride[0], ph), output_size(w, kw, stride[1], pw))
        if min(out_hw) < 1:
            raise ValueError(f"input {h}x{w} too small for kernel {kh}x{kw} with padding {ph},{pw}")
        padded_hw = (h + 2 * ph, w + 2 * pw)
        xc = x.transpose(1, 0, 2, 3)
        if self._wide_rows(out_hw[1]):
            src = self._rows.fill(xc, self.padding, kw, self.dtype)
            return src, out_hw, padded_hw, (out_hw[0], padded_hw[1]), True
        return self._padded.pad(xc, self.padding, self.dtype), out_hw, padded_hw, out_hw, False

    def _gather(self, src: np.ndarray, cols: np.ndarray, out_hw, padded_hw, wide: bool) -> np.ndarray:
        """im2col of ``src`` (a batch slice of ``_source``) into ``cols (C, kh, kw, n, *grid)``."""
        if wide:
            im2col_rows(src, self.kernel_size, padded_hw[1], out_hw[0],
                        reshaped_view(cols, (*cols.shape[:4], -1)))
        else:
            im2col(src, self.kernel_size, self.stride, out_hw, cols)
        return cols

    def _scatter(self, dcols: np.ndarray, dsrc: np.ndarray, padded_hw, wide: bool) -> None:
        """col2im: add ``dcols`` onto the zero-initialised ``dsrc`` (shaped like the source)."""
        if wide:
            col2im_rows(reshaped_view(dcols, (*dcols.shape[:4], -1)), dsrc, padded_hw[1])
        else:
            col2im(dcols, dsrc, self.stride)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expects (N, {self.in_channels}, H, W), got {x.shape}")
        n, c = x.shape[:2]
        kh, kw = self.kernel_size
        src, out_hw, padded_hw, grid, wide = self._source(x)
        k = c * kh * kw
        chunk = self._chunk_images(k * grid[0] * grid[1])
        # Training keeps every column for backward's dW; eval keeps one chunk's worth (and
        # backward, should it come, gathers them again from the cached input).
        keep = self.training or chunk >= n
        cols = self._buffer("_cols", (c, kh, kw, n if keep else chunk, *grid))
        weight2d = self.params["weight"].reshape(self.out_channels, -1)
        bias = self.params["bias"][:, None] if "bias" in self.params else None
        out = np.empty((self.out_channels, n, *grid), dtype=self.dtype)
        # Chunks over the batch: each chunk's columns are multiplied while still in cache.
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            chunk_src = src[:, part]
            chunk_cols = self._gather(chunk_src, cols[:, :, :, part if keep else slice(0, chunk_src.shape[1])],
                                      out_hw, padded_hw, wide)
            chunk_out = reshaped_view(out[:, part], (self.out_channels, -1))
            np.matmul(weight2d, reshaped_view(chunk_cols, (k, -1)), out=chunk_out)
            if bias is not None:  # on the 2-D view: long inner loops, not rows of Wp
                chunk_out += bias
        self._cache = (x.shape, src, out_hw, padded_hw, grid, wide, cols if keep else None)
        # (C_out, N, grid) is channel-major already: hand it out as an NCHW view.
        return out[:, :, :, :out_hw[1]].transpose(1, 0, 2, 3)

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError("Conv2d.backward called before forward")
        (n, c, h, w), src, out_hw, padded_hw, grid, wide, cols = self._cache
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        k = c * kh * kw
        doutc = dout.transpose(1, 0, 2, 3)
        if grid != out_hw:
            # Zero junk columns (never written) make every product below ignore them.
            dgrid = self._buffer("_dout_grid", (self.out_channels, n, *grid), fill=0.0)
            dgrid[:, :, :, :out_hw[1]] = doutc
        else:  # free when dout is channel-major in memory (it is, coming from our layers)
            dgrid = np.ascontiguousarray(doutc, dtype=self.dtype)
        dout2d = dgrid.reshape(self.out_channels, -1)
        weight = self.params["weight"]
        if cols is None:  # forward ran in eval mode and kept one chunk only: gather again
            cols = self._gather(src, np.empty((c, kh, kw, n, *grid), dtype=self.dtype), out_hw, padded_hw, wide)
        self.grads["weight"] = (dout2d @ cols.reshape(k, -1).T).reshape(weight.shape)
        if "bias" in self.params:
            # A product with ones: BLAS sums rows ~2.5x faster than dout2d.sum(axis=1).
            self.grads["bias"] = dout2d @ self._buffer("_ones", (dout2d.shape[1],), fill=1.0)
        if not self.input_grad:
            return None
        dsrc = np.zeros(src.shape, dtype=self.dtype)
        chunk = self._chunk_images(k * grid[0] * grid[1])
        dcols = self._buffer("_dcols", (c, kh, kw, min(chunk, n), *grid))
        weight2d_t = weight.reshape(self.out_channels, -1).T
        # Chunks again: each chunk's column gradients are scattered while still in cache.
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            chunk_dout = dgrid[:, part]
            chunk_dcols = dcols[:, :, :, :chunk_dout.shape[1]]
            np.matmul(weight2d_t, reshaped_view(chunk_dout, (self.out_channels, -1)),
                      out=reshaped_view(chunk_dcols, (k, -1)))
            self._scatter(chunk_dcols, dsrc[:, part], padded_hw, wide)
        if wide:
            dsrc = RowsBuffer.plane(dsrc, padded_hw)
        return dsrc[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)
