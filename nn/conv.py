"""2-D convolution (cross-correlation, like PyTorch) as im2col + one matrix product."""

from __future__ import annotations

import numpy as np

from nn.im2col import PaddedBuffer, RowsBuffer, col2im, col2im_rows, im2col, im2col_rows, output_size, pair
from nn.init import initialize
from nn.module import Module


class Conv2d(Module):
    """``out[n, o] = bias[o] + sum_c weight[o, c] (*) x[n, c]`` over zero-padded, strided windows.

    Args
    ----
    in_channels, out_channels : int
    kernel_size : int or (kH, kW)
    stride : int or (sH, sW), default 1
    padding : int or (pH, pW), default 0 — zeros added on both sides of H and W.
    bias : bool, default True
    init : weight initializer from ``nn.init.SCHEMES``, default ``"he_uniform"``.
    rng : numpy.random.Generator for the weights; ``None`` draws from a fresh, *unseeded*
        ``np.random.default_rng()`` (pass one for reproducible weights).
    dtype : float32 (default) or float64. Inputs and output gradients are cast to it.

    Shape
    -----
    x : (N, C_in, H, W) -> out : (N, C_out, H_out, W_out), where
    ``H_out = floor((H + 2*pH - kH) / sH) + 1`` and ``W_out = floor((W + 2*pW - kW) / sW) + 1``.

    Attributes
    ----------
    params["weight"] : (C_out, C_in, kH, kW), drawn from ``init`` with fan_in = C_in*kH*kW.
    params["bias"] : (C_out,), zeros (absent when ``bias=False``).

    Notes
    -----
    The output is returned as an NCHW *view* of channel-major ``(C_out, N, H_out, W_out)``
    memory; the next layer's ``x.transpose(1, 0, 2, 3)`` is then contiguous again for free.
    Outputs and input gradients are fresh arrays; internal buffers are reused across calls
    with the same shapes and are never handed out.
    """

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

    def _buffer(self, name: str, shape: tuple[int, ...], fill_zeros: bool = False) -> np.ndarray:
        """A private array reused while ``shape`` repeats (allocating and first-touching
        megabytes per batch costs as much as filling them)."""
        buffer = self.__dict__.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != self.dtype:
            buffer = (np.zeros if fill_zeros else np.empty)(shape, dtype=self.dtype)
            self.__dict__[name] = buffer
        return buffer

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expects (N, {self.in_channels}, H, W), got {x.shape}")
        n, c, h, w = x.shape
        (kh, kw), stride, (ph, pw) = self.kernel_size, self.stride, self.padding
        out_hw = (output_size(h, kh, stride[0], ph), output_size(w, kw, stride[1], pw))
        if min(out_hw) < 1:
            raise ValueError(f"input {h}x{w} too small for kernel {kh}x{kw} with padding {ph},{pw}")
        xc = x.transpose(1, 0, 2, 3)
        if stride == (1, 1):
            # Outputs on the wide Ho x Wp grid (see RowsBuffer); junk columns dropped by a view.
            padded_hw = (h + 2 * ph, w + 2 * pw)
            rows = self._rows.fill(xc, self.padding, kw, self.dtype)
            run = out_hw[0] * padded_hw[1]
            cols = im2col_rows(rows, self.kernel_size, padded_hw[1], out_hw[0],
                               out=self._buffer("_cols", (c, kh, kw, n, run)))
            grid = (out_hw[0], padded_hw[1])
        else:
            xp = self._padded.pad(xc, self.padding, self.dtype)
            padded_hw = xp.shape[2:]
            cols = im2col(xp, self.kernel_size, stride, out_hw,
                          out=self._buffer("_cols", (c, kh, kw, n, *out_hw)))
            grid = out_hw
        out = self.params["weight"].reshape(self.out_channels, -1) @ cols.reshape(c * kh * kw, -1)
        if "bias" in self.params:
            out += self.params["bias"][:, None]
        self._cache = ((n, c, h, w), padded_hw, out_hw, grid, cols)
        # (C_out, N*grid) is channel-major already: hand it out as an NCHW view.
        out = out.reshape(self.out_channels, n, *grid)[:, :, :, :out_hw[1]]
        return out.transpose(1, 0, 2, 3)

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError("Conv2d.backward called before forward")
        (n, c, h, w), padded_hw, out_hw, grid, cols = self._cache
        ph, pw = self.padding
        doutc = dout.transpose(1, 0, 2, 3)
        if grid != out_hw:
            # Zero junk columns (never written) make every product below ignore them.
            dgrid = self._buffer("_dout_grid", (self.out_channels, n, *grid), fill_zeros=True)
            dgrid[:, :, :, :out_hw[1]] = doutc
        else:  # free when dout is channel-major in memory (it is, coming from our layers)
            dgrid = doutc.astype(self.dtype, copy=False)
        dout2d = dgrid.reshape(self.out_channels, -1)
        cols2d = cols.reshape(c * self.kernel_size[0] * self.kernel_size[1], -1)
        weight = self.params["weight"]
        self.grads["weight"] = (dout2d @ cols2d.T).reshape(weight.shape)
        if "bias" in self.params:
            self.grads["bias"] = dout2d.sum(axis=1)
        if not self.input_grad:
            return None
        dcols = np.matmul(weight.reshape(self.out_channels, -1).T, dout2d,
                          out=self._buffer("_dcols", cols2d.shape)).reshape(cols.shape)
        if self.stride == (1, 1):
            dflat = np.zeros((c, n, padded_hw[0] * padded_hw[1] + self.kernel_size[1] - 1), self.dtype)
            dxp = RowsBuffer.plane(col2im_rows(dcols, dflat, padded_hw[1]), padded_hw)
        else:
            dxp = col2im(dcols, np.zeros((c, n, *padded_hw), dtype=self.dtype), self.stride)
        return dxp[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)
