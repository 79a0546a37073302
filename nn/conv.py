"""2-D convolution (cross-correlation, like PyTorch) as matrix products over gathered windows."""

from __future__ import annotations

import numpy as np

from nn.im2col import (PaddedBuffer, batch_first, batch_last, is_batch_last, output_size, pair, reshaped_view,
                       strided_view)
from nn.init import initialize, initialize_bias
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
    bias_init : {"zeros", "randn"}, default "zeros"
        Drawn after the weight (``nn.init.initialize_bias``).
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
        From ``bias_init`` (absent when ``bias=False``).

    Notes
    -----
    The output is returned as an NCHW *view* of batch-last ``(C_out, H_out, W_out, N)``
    memory (see ``nn/im2col.py``); the next layer's ``batch_last(x)`` is then contiguous
    again for free. Outputs and input gradients are fresh arrays; internal buffers are
    reused across calls with the same shapes and are never handed out. ``backward`` reads
    the input of the latest ``forward``: do not modify it in between.

    The products are im2col's (``nn/im2col.py``: every window as a column, the convolution
    as ``weight2d @ cols``), but that matrix, ``kH*kW`` copies of the input, is never built:
    ``_window_chunks`` copies each input row ``kW`` times, shifted, in an order where the
    windows of one output row are one contiguous block, and the layer multiplies those
    blocks where they lie, one product per output row.
    """

    # Windows are gathered and multiplied in chunks of output rows of at most about this many
    # bytes (at least one row), so that a large batch's windows stay in cache: at 1,000
    # images (evaluation) LeNet-5's conv1 would need 18 MB of them. Evaluating 1,000 images
    # at a time (one process, AMD Zen 4, interleaved) took 0.90 of the time of unchunked
    # windows with 2 MB, 0.94 with 1 MB, 0.96 with 4 MB; training shards of up to 128 images
    # fit in one chunk.
    WINDOW_CHUNK_BYTES = 2 << 20
    # The input gradient is computed in chunks of output rows, with this budget for the
    # shifted copies of dout. Of 256 kB, 1 MB, the whole batch and the 512 kB chunks that
    # im2col's columns then used, 1 MB was fastest at shards of 16, 32 and 128 images: steps
    # 2-4% faster than 512 kB (AMD Zen 4, interleaved).
    INPUT_GRADIENT_CHUNK_BYTES = 1 << 20

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, *, init: str = "he_uniform", bias_init: str = "zeros",
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
            self._add_param("bias", initialize_bias(self.out_channels, bias_init, rng, dtype=self.dtype))
        self._padded = PaddedBuffer(0.0)
        self._cache = None

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'bias' in self.params}")

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A private array reused while ``shape`` repeats (allocating and first-touching
        megabytes per batch costs as much as filling them)."""
        buffer = self.__dict__.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != self.dtype:
            buffer = self.__dict__[name] = np.empty(shape, dtype=self.dtype)
        return buffer

    def _rows_per_chunk(self, xp_shape: tuple[int, ...], out_hw: tuple[int, int]) -> int:
        """How many output rows' windows fit in ``WINDOW_CHUNK_BYTES`` (at least one)."""
        c, _, _, n = xp_shape
        row_bytes = self.stride[0] * c * self.kernel_size[1] * out_hw[1] * n * self.dtype.itemsize
        return min(out_hw[0], max(1, self.WINDOW_CHUNK_BYTES // row_bytes))

    def _window_chunks(self, xp: np.ndarray, out_hw: tuple[int, int], per_chunk: int, reuse: bool = False):
        """Each chunk of ``per_chunk`` output rows with the columns of its windows.

        The buffer holds ``kW`` shifted copies of each padded input row the chunk reads:
        ``windows[h, c, j, wo, n] = xp[c, sH*rows.start + h, j + sW*wo, n]``. In this order
        the columns of one output row (every ``(i, c, j)`` of its windows) are ONE contiguous
        block, ``windows[sH*r : sH*r + kH]``, so the layer multiplies them where they lie:
        the input is copied ``kW`` times, and im2col's matrix of ``kH*kW`` copies is never
        built. Against im2col's columns in 512 kB chunks, LeNet-5 training steps (6/16
        channels, one process, AMD Zen 4, interleaved) took 0.83 of the time at shards of 16
        images, 0.86 at 32, 0.88 at 64 and 0.94 at 128.

        Parameters
        ----------
        xp : (C, Hp, Wp, N)
            The padded batch-last input.
        out_hw : (H_out, W_out)
        per_chunk : int
            Output rows per chunk (``_rows_per_chunk``); the last chunk may have fewer.
        reuse : bool, default False
            The buffer still holds all of ``xp``'s windows (backward after a forward of one
            chunk): they are not copied again.

        Yields
        ------
        rows : slice
            The chunk's output rows.
        columns : (len(rows), kH*C*kW, W_out*N)
            A read-only view of the reused buffer: ``columns[r]`` holds the windows of output
            row ``rows.start + r`` as columns, rows in ``(i, c, j)`` order.
        """
        c, _, _, n = xp.shape
        (kh, kw), (sh, sw), (out_h, out_w) = self.kernel_size, self.stride, out_hw
        buffer = self._buffer("_windows", (sh * (per_chunk - 1) + kh, c, kw, out_w, n))
        s_c, s_h, s_w, s_n = xp.strides
        s_row, _, s_j = buffer.strides[:3]
        for start in range(0, out_h, per_chunk):
            count = min(per_chunk, out_h - start)
            windows = buffer[:sh * (count - 1) + kh]
            if not reuse:
                np.copyto(windows, strided_view(xp, windows.shape, (s_h, s_c, s_w, sw * s_w, s_n),
                                                offset=sh * start * s_h))
            yield slice(start, start + count), strided_view(windows, (count, kh * c * kw, out_w * n),
                                                            (sh * s_row, s_j, buffer.itemsize))

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expects (N, {self.in_channels}, H, W), got {x.shape}")
        n, _, h, w = x.shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        out_hw = (output_size(h, kh, self.stride[0], ph), output_size(w, kw, self.stride[1], pw))
        if min(out_hw) < 1:
            raise ValueError(f"input {h}x{w} too small for kernel {kh}x{kw} with padding {ph},{pw}")
        xp = self._padded.pad(batch_last(x), self.padding, self.dtype)
        # Rows in the windows' (i, c, j) order.
        weight2d = self.params["weight"].transpose(0, 2, 1, 3).reshape(self.out_channels, -1)
        out = np.empty((self.out_channels, *out_hw, n), dtype=self.dtype)
        # One product per output row, a chunk's in one call: out[:, r] = weight2d @ columns[r].
        out_by_row = strided_view(out, (out_hw[0], self.out_channels, out_hw[1] * n),
                                  (out.strides[1], out.strides[0], out.itemsize), writeable=True)
        per_chunk = self._rows_per_chunk(xp.shape, out_hw)
        for rows, columns in self._window_chunks(xp, out_hw, per_chunk):
            np.matmul(weight2d, columns, out=out_by_row[rows])
        if "bias" in self.params:
            out += self.params["bias"][:, None, None, None]
        self._cache = (x.shape, xp, out_hw, per_chunk)
        return batch_first(out)

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError("Conv2d.backward called before forward")
        (n, c, h, w), xp, out_hw, per_chunk = self._cache
        (ph, pw), (kh, kw) = self.padding, self.kernel_size
        doutb = batch_last(dout)
        if not is_batch_last(doutb) or doutb.dtype != self.dtype:
            doutb = np.ascontiguousarray(doutb, dtype=self.dtype)  # free from our own layers
        if "bias" in self.params:
            # A product with ones: BLAS sums rows ~2.5x faster than .sum(axis=1).
            ones = np.ones(doutb.size // self.out_channels, dtype=self.dtype)
            self.grads["bias"] = doutb.reshape(self.out_channels, -1) @ ones
        # Each output row's share columns[r] @ dout[:, r].T, a k x C_out result: with
        # OpenBLAS's AVX-512 kernel, dout @ columns.T takes 1.8-1.9x as long for LeNet-5's
        # conv2 and 0.98-1.05x for conv1 (shards of 16-128 images, AMD Zen 4). Summed once
        # all are in: the same sum however the rows were chunked.
        dout_by_row_t = strided_view(doutb, (out_hw[0], out_hw[1] * n, self.out_channels),
                                     (doutb.strides[1], doutb.itemsize, doutb.strides[0]))
        # (H_out, kH*C*kW, C_out) floats: 192 kB for the pipeline's conv2 (8 -> 24 channels).
        shares = np.empty((out_hw[0], kh * c * kw, self.out_channels), dtype=self.dtype)
        for rows, columns in self._window_chunks(xp, out_hw, per_chunk, reuse=per_chunk == out_hw[0]):
            np.matmul(columns, dout_by_row_t[rows], out=shares[rows])
        dweight_t = shares.sum(axis=0)  # (kH*C*kW, C_out), rows in (i, c, j) order
        self.grads["weight"] = np.ascontiguousarray(
            dweight_t.T.reshape(self.out_channels, kh, c, kw).transpose(0, 2, 1, 3))
        if not self.input_grad:
            return None
        return batch_first(self._padded_input_gradient(doutb, xp.shape)[:, ph:ph + h, pw:pw + w])

    def _spread_columns(self, doutb: np.ndarray) -> np.ndarray:
        """``doutb``'s columns ``sW`` apart, with ``kW - 1`` zero columns on either side.

        A reused buffer: zeroed when (re)allocated, then only the columns of ``doutb`` are
        written, so the gaps and borders stay zero.

        Shape
        -----
        doutb : (C_out, H_out, W_out, N) -> (C_out, H_out, sW * (W_out - 1) + 2 * kW - 1, N)
        """
        kw, sw = self.kernel_size[1], self.stride[1]
        c_out, out_h, out_w, n = doutb.shape
        shape = (c_out, out_h, sw * (out_w - 1) + 2 * kw - 1, n)
        wide = self.__dict__.get("_dout_wide")
        if wide is None or wide.shape != shape or wide.dtype != self.dtype:
            wide = self._dout_wide = np.zeros(shape, dtype=self.dtype)
        wide[:, :, kw - 1:kw - 1 + sw * (out_w - 1) + 1:sw] = doutb
        return wide

    def _padded_input_gradient(self, doutb: np.ndarray, padded_shape: tuple[int, ...]) -> np.ndarray:
        """The gradient of the padded input: the transposed convolution, by kernel rows.

        Kernel row ``i`` of output row ``r`` reaches input row ``sH * r + i``, and along that
        row the gradient is a correlation of dout, spread ``sW`` apart, with the kernel row
        flipped. So, for a chunk of output rows at a time: gather ``kW`` shifted copies of
        the spread dout (im2col along W only), compute every kernel row's share at once as
        ONE product, then add each kernel row's share ``i`` rows down: ``kH`` adds of whole
        row blocks.

        It replaces col2im (``W2d.T @ dout``, then one strided add per kernel offset: 25 for
        5x5, each a NumPy call over short runs): LeNet-5's conv2 backward takes 0.71-0.82 of
        the time at shards of 16, 32 and 128 images (6->16 and 8->24 channels; AMD Zen 4, one
        core, interleaved), although its product is ``(H_in / H_out)`` times larger.

        Parameters
        ----------
        doutb : (C_out, H_out, W_out, N)
            The output gradient, batch-last.
        padded_shape : (C_in, Hp, Wp, N)
            The padded input's shape.

        Returns
        -------
        dxp : (C_in, Hp, Wp, N)
            A fresh array.
        """
        (kh, kw), sh = self.kernel_size, self.stride[0]
        dxp = np.zeros(padded_shape, dtype=self.dtype)
        dout_wide = self._spread_columns(doutb)
        c_out, out_h, width, n = dout_wide.shape
        covered = width - (kw - 1)  # padded input columns some window reads
        # Row (c, i), column (o, j): weight[o, c, i, kW - 1 - j], the kernel flipped along W.
        flipped_rows = self.params["weight"][..., ::-1].transpose(1, 2, 0, 3).reshape(self.in_channels * kh, -1)
        row_bytes = c_out * kw * covered * n * self.dtype.itemsize
        per_chunk = min(out_h, max(1, self.INPUT_GRADIENT_CHUNK_BYTES // row_bytes))
        shifted_buffer = self._buffer("_shifted", (c_out, kw, per_chunk, covered, n))
        by_kernel_row_buffer = self._buffer("_by_kernel_row", (self.in_channels, kh, per_chunk, covered, n))
        s_o, s_h, s_w, s_n = dout_wide.strides
        for start in range(0, out_h, per_chunk):
            count = min(per_chunk, out_h - start)
            # shifted[o, j, r, x, n] = dout_wide[o, start + r, x + j, n]
            shifted = shifted_buffer[:, :, :count]
            np.copyto(shifted, strided_view(dout_wide, shifted.shape, (s_o, s_w, s_h, s_w, s_n), offset=start * s_h))
            by_kernel_row = by_kernel_row_buffer[:, :, :count]
            np.matmul(flipped_rows, reshaped_view(shifted, (c_out * kw, -1)),
                      out=reshaped_view(by_kernel_row, (self.in_channels * kh, -1)))
            for i in range(kh):
                first = sh * start + i
                dxp[:, first:first + sh * (count - 1) + 1:sh, :covered] += by_kernel_row[:, i]
        return dxp
