"""Sliding-window helpers shared by convolution and pooling, on channel-major arrays.

What im2col is: a convolution slides a ``kh x kw`` window over the image and, at each
position, takes a dot product of the window with each filter (see ``nn/reference.py``'s
loops). im2col ("image to columns") first copies every window into one column of a matrix
``cols`` of shape ``(C_in*kh*kw, N*H_out*W_out)``. Then the whole convolution is a single
matrix product, ``out = W2d @ cols`` with the filters as rows ``W2d: (C_out, C_in*kh*kw)``,
which BLAS computes hundreds of times faster than loops. The backward pass is two more
products (``dW2d = dout @ cols.T`` and ``dcols = W2d.T @ dout``) and col2im, which adds each
column's gradient back onto the pixels its window covered. The price is memory: each pixel is
copied up to ``kh*kw`` times.

Layers work on ``(C, N, H, W)`` arrays (the public NCHW array with its first two axes
swapped, a free view). Keeping the batch axis *inside* the channel axis makes every slice
``x[:, :, i::s, j::s]`` a set of long runs over ``N*H*W``, and lets ``W2d @ cols`` produce the
next layer's channel-major output directly, with no transpose copy.

Every loop here runs over the kh*kw kernel *offsets* (25 for a 5x5 kernel), never over pixels
or samples: each iteration moves a whole strided slab with one NumPy call.
"""

from __future__ import annotations

import numpy as np


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``; validated to be ints >= ``minimum``."""
    values = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   for v in values):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(values) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(values[0]), int(values[1])


def reshaped_view(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``array.reshape(shape)`` that is guaranteed to be a view (raises instead of copying).

    For reshapes of buffer slices that are written through.
    """
    view = array.view()
    view.shape = shape  # raises AttributeError if a copy would be needed
    return view


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``floor((size + 2*padding - kernel) / stride) + 1``, as in PyTorch (ceil_mode=False)."""
    return (size + 2 * padding - kernel) // stride + 1


def window(offset_h: int, offset_w: int, stride: tuple[int, int], out_hw: tuple[int, int]):
    """Index selecting, for every output pixel, the input pixel at kernel offset (i, j)."""
    return (Ellipsis,
            slice(offset_h, offset_h + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
            slice(offset_w, offset_w + stride[1] * (out_hw[1] - 1) + 1, stride[1]))


class RowsBuffer:
    """Stride-1 convolution input laid out so every kernel offset is ONE long contiguous run.

    Each image's padded ``(Hp, Wp)`` plane is flattened (plus a tail of ``kw - 1`` zeros).
    Output pixel ``(ho, wo)`` at kernel offset ``(i, j)`` reads flat index
    ``(ho + i) * Wp + (wo + j) = ho * Wp + wo + (i * Wp + j)``: so if outputs are computed on
    a "wide" grid of ``Ho x Wp`` positions (the ``Wp - Wo`` extra columns per row are junk,
    discarded later), offset ``(i, j)`` gathers the run ``flat[i*Wp + j : i*Wp + j + Ho*Wp]``.
    Copying ``C*N`` runs of ``Ho*Wp`` values instead of ``C*N*Ho`` rows of ``Wo`` values makes
    im2col/col2im 3-4x faster (NumPy's per-row overhead dominates short rows), at the price of
    ``Wp / Wo`` more columns in the matrix products (1.14x for LeNet's conv1, 1.4x for conv2).

    The zero border and tail are written when the buffer is allocated; each call rewrites only
    the interior. The buffer is private to its layer.
    """

    def __init__(self) -> None:
        self._buffer: np.ndarray | None = None

    @staticmethod
    def plane(flat: np.ndarray, padded_hw: tuple[int, int]) -> np.ndarray:
        """The ``(C, N, Hp, Wp)`` image view of a ``(C, N, Hp*Wp + tail)`` flat buffer."""
        c, n = flat.shape[:2]
        return flat[:, :, :padded_hw[0] * padded_hw[1]].reshape(c, n, *padded_hw)

    def fill(self, x: np.ndarray, padding: tuple[int, int], kernel_w: int, dtype) -> np.ndarray:
        """Copy channel-major ``x (C, N, H, W)`` into the buffer; returns ``(C, N, Hp*Wp + kw-1)``."""
        (ph, pw), (c, n, h, w) = padding, x.shape
        hp, wp = h + 2 * ph, w + 2 * pw
        shape = (c, n, hp * wp + kernel_w - 1)
        if self._buffer is None or self._buffer.shape != shape or self._buffer.dtype != dtype:
            self._buffer = np.zeros(shape, dtype=dtype)
        self.plane(self._buffer, (hp, wp))[:, :, ph:ph + h, pw:pw + w] = x
        return self._buffer


def im2col_rows(flat: np.ndarray, kernel: tuple[int, int], padded_w: int, out_h: int,
                out: np.ndarray) -> np.ndarray:
    """Stride-1 im2col on a ``RowsBuffer``: fills ``out (C, kh, kw, N, out_h*padded_w)``.

    ``out[c, i, j, n] = flat[c, n, i*Wp + j : i*Wp + j + out_h*Wp]``, gathered by ONE copy
    from a read-only strided view (no Python loop over the kernel offsets: ~30% faster at
    LeNet-5's batch 32 than 25 slice copies).
    """
    c, n, length = flat.shape
    kh, kw = kernel
    run = out_h * padded_w
    if (kh - 1) * padded_w + (kw - 1) + run > length:
        raise ValueError(f"flat buffer of {length} values too short for kernel {kernel} and {out_h} rows")
    item = flat.itemsize
    if flat.strides[2] != item:
        raise ValueError("im2col_rows needs rows contiguous in memory")
    windows = np.lib.stride_tricks.as_strided(
        flat, shape=(c, kh, kw, n, run),
        strides=(flat.strides[0], padded_w * item, item, flat.strides[1], item), writeable=False)
    np.copyto(out, windows)
    return out


def col2im_rows(dcols: np.ndarray, dflat: np.ndarray, padded_w: int) -> np.ndarray:
    """Adjoint of ``im2col_rows``: accumulate ``dcols`` into the zeroed flat buffer ``dflat``.

    Shapes: ``dcols : (C, kh, kw, N, run)``, ``dflat : (C, N, Hp*Wp + kw-1)``. Junk columns
    of ``dcols`` must be zero.
    """
    _, kh, kw, _, run = dcols.shape
    for i in range(kh):
        for j in range(kw):
            start = i * padded_w + j
            dflat[:, :, start:start + run] += dcols[:, i, j]
    return dflat


class PaddedBuffer:
    """A reusable ``(C, N, H + 2ph, W + 2pw)`` array whose border holds ``fill``.

    Padding by copying into a preallocated buffer is several times faster than ``np.pad``,
    and the border is written only when the buffer is (re)allocated: later calls overwrite
    the interior alone. The buffer is private to its layer; never return it.
    """

    def __init__(self, fill: float) -> None:
        self.fill = fill
        self._buffer: np.ndarray | None = None

    def pad(self, x: np.ndarray, padding: tuple[int, int], dtype) -> np.ndarray:
        ph, pw = padding
        if ph == 0 and pw == 0 and x.dtype == dtype:
            return x
        c, n, h, w = x.shape
        shape = (c, n, h + 2 * ph, w + 2 * pw)
        if self._buffer is None or self._buffer.shape != shape or self._buffer.dtype != dtype:
            self._buffer = np.full(shape, self.fill, dtype=dtype)
        self._buffer[:, :, ph:ph + h, pw:pw + w] = x  # casts to dtype as it copies
        return self._buffer


def im2col(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
           out_hw: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Gather every receptive field into columns (one copy from a read-only strided view).

    Parameters
    ----------
    xp : (C, N, Hp, Wp)
        Padded channel-major input.
    kernel : (kh, kw)
    stride : (sH, sW)
    out_hw : (Ho, Wo)
    out : (C, kh, kw, N, Ho, Wo), optional
        Preallocated array to fill.

    Returns
    -------
    cols : (C, kh, kw, N, Ho, Wo)
        ``cols[c, i, j, n, ho, wo] = xp[c, n, i + sH*ho, j + sW*wo]``; reshaped to
        (C*kh*kw, N*Ho*Wo) its rows match a weight ``(C_out, C, kh, kw)`` reshaped to
        (C_out, C*kh*kw).

    Raises
    ------
    ValueError
        If ``xp`` is too small for ``Ho x Wo`` windows of ``kernel`` at ``stride``.
    """
    c, n, hp, wp = xp.shape
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    if kh + sh * (ho - 1) > hp or kw + sw * (wo - 1) > wp:
        raise ValueError(f"input {hp}x{wp} too small for {ho}x{wo} windows of {kernel} at stride {stride}")
    if out is None:
        out = np.empty((c, kh, kw, n, ho, wo), dtype=xp.dtype)
    s_c, s_n, s_h, s_w = xp.strides
    windows = np.lib.stride_tricks.as_strided(
        xp, shape=(c, kh, kw, n, ho, wo), strides=(s_c, s_h, s_w, s_n, sh * s_h, sw * s_w), writeable=False)
    np.copyto(out, windows)
    return out


def col2im(dcols: np.ndarray, dxp: np.ndarray, stride: tuple[int, int]) -> np.ndarray:
    """Adjoint of ``im2col``: add every column back onto the pixel it came from.

    Parameters
    ----------
    dcols : (C, kh, kw, N, Ho, Wo)
        Gradient w.r.t. the columns.
    dxp : (C, N, Hp, Wp)
        Zero-initialised array, accumulated into in place. Overlapping windows
        (stride < kernel) add up, as they must.
    stride : (sH, sW)

    Returns
    -------
    dxp : (C, N, Hp, Wp)
        The same array, accumulated into.
    """
    _, kh, kw, _, ho, wo = dcols.shape
    for i in range(kh):
        for j in range(kw):
            dxp[window(i, j, stride, (ho, wo))] += dcols[:, i, j]
    return dxp
