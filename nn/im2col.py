"""Sliding-window helpers shared by convolution and pooling, on batch-last arrays.

What im2col is: a convolution slides a ``kh x kw`` window over the image and, at each
position, takes a dot product of the window with each filter (see ``nn/reference.py``'s
loops). im2col ("image to columns") first copies every window into one column of a matrix
``cols`` of shape ``(C_in*kh*kw, H_out*W_out*N)``. Then the whole convolution is a single
matrix product, ``out = W2d @ cols`` with the filters as rows ``W2d: (C_out, C_in*kh*kw)``,
which BLAS computes hundreds of times faster than loops. The backward pass is two more
products (``dW2d = dout @ cols.T`` and ``dcols = W2d.T @ dout``) and col2im, which adds each
column's gradient back onto the pixels its window covered (``Conv2d`` computes that same sum
in a cheaper order: see ``Conv2d._padded_input_gradient``). The price is memory: each pixel
is copied up to ``kh*kw`` times. ``Conv2d`` itself copies each pixel ``kw`` times, in an
order where each output row's columns are one block: see ``Conv2d._window_chunks``.

Layers work on *batch-last* ``(C, H, W, N)`` arrays: the public NCHW array with the batch
axis moved last, ``x.transpose(1, 2, 3, 0)``, a free view. With the batch innermost, the
input pixels one kernel offset ``(i, j)`` needs, ``x[:, i:i + H_out, j:j + W_out, :]``, lie in
runs of ``W_out*N`` consecutive values (one run per channel and output row), so gathering
and scattering them are a few long copies; and ``W2d @ cols`` writes the next layer's
batch-last output directly. Pooling gains the same way: the two columns of a 2x2 window,
``x[:, :, 0::2]`` and ``x[:, :, 1::2]``, are runs of ``N`` values.

No loop here or in the layers runs over pixels or samples: im2col is one copy from a strided
view, and the layers loop at most over kernel rows or offsets (5 or 25 for a 5x5 kernel) or
chunks of output rows, each iteration moving a whole strided slab with one NumPy call.
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


def strided_view(array: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...], offset: int = 0,
                 writeable: bool = False) -> np.ndarray:
    """A view of C-contiguous ``array`` with any shape and byte strides, read-only by default.

    What ``np.lib.stride_tricks.as_strided`` makes, in ~1 us instead of ~5 us (measured on
    AMD Zen 4; a few are made per layer and step). Every element it reaches must lie in
    ``array``: NumPy checks that the extent fits the buffer.

    Parameters
    ----------
    array : numpy.ndarray
        C-contiguous.
    shape, strides : tuple of int
        Of the view; strides in bytes, non-negative.
    offset : int, default 0
        Byte offset of the view's first element in ``array``.
    writeable : bool, default False
        Only for views whose elements do not overlap (a write through one that does lands
        in several places).
    """
    view = np.ndarray(shape, dtype=array.dtype, buffer=array, offset=offset, strides=strides)
    view.flags.writeable = writeable
    return view


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``floor((size + 2*padding - kernel) / stride) + 1``, as in PyTorch (ceil_mode=False)."""
    return (size + 2 * padding - kernel) // stride + 1


def batch_last(x: np.ndarray) -> np.ndarray:
    """The ``(C, H, W, N)`` view of an ``(N, C, H, W)`` array (no copy)."""
    return x.transpose(1, 2, 3, 0)


def batch_first(xb: np.ndarray) -> np.ndarray:
    """The ``(N, C, H, W)`` view of a ``(C, H, W, N)`` array (no copy): what layers return."""
    return xb.transpose(3, 0, 1, 2)


def is_batch_last(xb: np.ndarray) -> bool:
    """Whether ``(C, H, W, N)`` ``xb`` is one C-contiguous block (our layers' outputs are)."""
    return xb.flags.c_contiguous


def window(offset_h: int, offset_w: int, stride: tuple[int, int], out_hw: tuple[int, int]):
    """Index of the input pixels at kernel offset ``(offset_h, offset_w)`` of every window.

    Applied to a batch-last ``(C, H, W, N)`` array, it selects a ``(C, H_out, W_out, N)`` slab.
    """
    return (slice(None),
            slice(offset_h, offset_h + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
            slice(offset_w, offset_w + stride[1] * (out_hw[1] - 1) + 1, stride[1]))


class PaddedBuffer:
    """A reusable batch-last ``(C, H + 2ph, W + 2pw, N)`` array whose border holds ``fill``.

    Padding by copying into a preallocated buffer is several times faster than ``np.pad``,
    and the border is written only when the buffer is (re)allocated: later calls overwrite
    the interior alone. The buffer is private to its layer; never return it.

    Parameters
    ----------
    fill : float
        The value of the border (0 for convolution and average pooling, -inf for max).
    """

    def __init__(self, fill: float) -> None:
        self.fill = fill
        self._buffer: np.ndarray | None = None

    def pad(self, xb: np.ndarray, padding: tuple[int, int], dtype) -> np.ndarray:
        """``xb`` padded by ``padding = (pH, pW)``, contiguous and of ``dtype``.

        ``xb`` itself when it already is all that (no padding, contiguous, right dtype).

        Shape
        -----
        xb : (C, H, W, N) -> (C, H + 2*pH, W + 2*pW, N)
        """
        ph, pw = padding
        if ph == 0 and pw == 0 and xb.dtype == dtype and is_batch_last(xb):
            return xb
        c, h, w, n = xb.shape
        shape = (c, h + 2 * ph, w + 2 * pw, n)
        if self._buffer is None or self._buffer.shape != shape or self._buffer.dtype != dtype:
            self._buffer = np.full(shape, self.fill, dtype=dtype)
        self._buffer[:, ph:ph + h, pw:pw + w] = xb  # casts to dtype as it copies
        return self._buffer


def im2col(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
           out_hw: tuple[int, int]) -> np.ndarray:
    """Gather every receptive field into columns (one copy from a read-only strided view).

    The textbook form, shown by ``docs/walkthrough.py``; ``Conv2d`` gathers the same columns
    with ``kW`` copies of the input instead of ``kH*kW`` (``Conv2d._window_chunks``).

    Parameters
    ----------
    xp : (C, Hp, Wp, N)
        Padded batch-last input.
    kernel, stride : (int, int)
    out_hw : (H_out, W_out)

    Returns
    -------
    cols : (C, kh, kw, H_out, W_out, N)
        ``cols[c, i, j, r, wo, n] = xp[c, i + sH*r, j + sW*wo, n]``; reshaped to
        ``(C*kh*kw, H_out*W_out*N)`` its rows match a weight ``(C_out, C, kh, kw)`` reshaped
        to ``(C_out, C*kh*kw)``.
    """
    c, hp, wp, n = xp.shape
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    if kh + sh * (ho - 1) > hp or kw + sw * (wo - 1) > wp:
        raise ValueError(f"input {hp}x{wp} too small for {ho}x{wo} windows of {kernel} at stride {stride}")
    xp = np.ascontiguousarray(xp)  # strided_view needs one block
    s_c, s_h, s_w, s_n = xp.strides
    return strided_view(xp, (c, kh, kw, ho, wo, n), (s_c, s_h, s_w, sh * s_h, sw * s_w, s_n)).copy()
