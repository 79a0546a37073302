"""Data augmentation for image batches: random affine warps and elastic distortions.

Each image gets its own random rotation, scale and translation about the image centre,
optionally plus an elastic displacement field (Simard, Steinkraus & Platt, 2003). They are
composed into ONE sampling grid per image, and the whole batch is resampled by a single
bilinear interpolation, so the image is blurred once however many effects are on.

Geometry (rows grow downwards, columns to the right, pixel centres at integer positions,
centre ``((H - 1) / 2, (W - 1) / 2)``): the warp moves image *content* by

* ``shift = (dy, dx)`` pixels: down by ``dy``, right by ``dx``; an integer shift equals
  ``np.roll`` with the vacated pixels set to ``fill``;
* ``rotation`` degrees counter-clockwise as displayed (positive angle; 90 equals
  ``np.rot90`` for a square image);
* ``scale``: enlarged by the factor about the centre (> 1 zooms in).

The forward map is ``q = c + scale * R(angle) (p - c) + shift``. Resampling needs the
inverse: the output pixel ``q`` reads the input at ``c + R(-angle) (q - c - shift) / scale``
(plus the elastic displacement), and anything outside the image reads ``fill``.
"""

from __future__ import annotations

import math

import numpy as np


def augment(x: np.ndarray, rng: np.random.Generator, *, max_shift: float = 0.0,
            max_rotation: float = 0.0, max_scale: float = 0.0, elastic_alpha: float = 0.0,
            elastic_sigma: float = 4.0, fill: float = 0.0) -> np.ndarray:
    """Randomly warp each image of a batch.

    Per image, drawn independently and uniformly: rotation in ``[-max_rotation, max_rotation]``
    degrees, scale in ``[1 - max_scale, 1 + max_scale]``, shift in ``[-max_shift, max_shift]``
    pixels per axis (fractional), and when ``elastic_alpha > 0`` a displacement field: two
    (H, W) fields uniform in [-1, 1], each smoothed by a Gaussian of std ``elastic_sigma``
    pixels (normalised kernel, zeros beyond the border) and multiplied by ``elastic_alpha``
    (Simard et al. use alpha = 34, sigma = 4 on MNIST: displacements of ~1.4 px).

    Random numbers come from ``rng`` in this fixed order, drawing only for enabled effects:
    rotations (N,), scales (N,), shifts (N, 2) as (dy, dx), elastic fields (2, N, H, W) as
    (dy, dx). The same seed and arguments therefore give bit-identical output.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64
        Images (C is 1 for MNIST).
    rng : numpy.random.Generator
        The source of randomness.
    max_shift : float, default 0.0
        Pixels; 0 = no translation.
    max_rotation : float, default 0.0
        Degrees; 0 = no rotation.
    max_scale : float in [0, 1), default 0.0
        Fraction; 0 = no scaling.
    elastic_alpha : float, default 0.0
        Strength of the elastic distortion in pixels; 0 = off.
    elastic_sigma : float, default 4.0
        Smoothness of the elastic field in pixels (> 0).
    fill : float, default 0.0
        Value read outside the image (finite).

    Returns
    -------
    out : (N, C, H, W)
        New array of ``x.dtype``; when every effect is off, ``x`` itself (not a copy, and
        no random numbers are drawn).

    Raises
    ------
    ValueError
        If ``x`` is not an (N, C, H, W) float32 or float64 array, or an argument is out of
        the ranges above.
    """
    _check_images(x)
    for name, value in (("max_shift", max_shift), ("max_rotation", max_rotation),
                        ("max_scale", max_scale), ("elastic_alpha", elastic_alpha)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if max_scale >= 1:
        raise ValueError(f"max_scale must be < 1 (scale factors stay positive), got {max_scale!r}")
    if elastic_alpha and not elastic_sigma > 0:
        raise ValueError(f"elastic_sigma must be > 0, got {elastic_sigma!r}")
    _check_fill(fill)
    if not (max_shift or max_rotation or max_scale or elastic_alpha):
        return x

    n, _, height, width = x.shape
    rotation = rng.uniform(-max_rotation, max_rotation, n) if max_rotation else np.zeros(n)
    scale = rng.uniform(1.0 - max_scale, 1.0 + max_scale, n) if max_scale else np.ones(n)
    shift = rng.uniform(-max_shift, max_shift, (n, 2)) if max_shift else np.zeros((n, 2))
    positions = affine_positions((height, width), rotation, scale, shift, dtype=x.dtype)
    if elastic_alpha:
        field = rng.random((2 * n, height, width), dtype=x.dtype)
        field -= 0.5  # uniform in [-1, 1] once doubled: the 2 goes into alpha below
        displacement = elastic_displacement(field, 2.0 * elastic_alpha, elastic_sigma, out=field)
        positions += displacement.reshape(2, n, height, width)
    return _sample_bilinear_into(x, positions, fill)  # ``positions`` is ours to overwrite


def affine_positions(size: tuple[int, int], rotation: np.ndarray, scale: np.ndarray,
                     shift: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Where each output pixel reads the input, for one affine warp per image.

    Parameters
    ----------
    size : (H, W)
    rotation : (N,)
        Degrees, counter-clockwise as displayed.
    scale : (N,)
        Positive factors.
    shift : (N, 2)
        Content displacement (dy, dx) in pixels.
    dtype : numpy dtype, default float32

    Returns
    -------
    positions : (2, N, H, W) of ``dtype``
        ``[0]`` the input row and ``[1]`` the input column read by each output pixel,
        ``c + R(-angle) (q - c - shift) / scale``.
    """
    height, width = size
    center = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    angle = np.deg2rad(np.asarray(rotation, dtype=np.float64))
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    # R(-angle) / scale in (row, col) coordinates, rows pointing down: (N, 2, 2).
    linear = np.stack([np.stack([cos, sin], axis=-1), np.stack([-sin, cos], axis=-1)], axis=1)
    offset = center[:, None] - linear @ (center + np.asarray(shift, dtype=np.float64))[:, :, None]
    # Per output coordinate k: (N, 3) @ (3, H*W) maps homogeneous pixels (row, col, 1).
    transform = np.concatenate([linear, offset], axis=2).transpose(1, 0, 2).astype(dtype)
    out_rows, out_cols = np.divmod(np.arange(height * width), width)
    grid = np.stack([out_rows, out_cols, np.ones(height * width)]).astype(dtype)
    return (transform @ grid).reshape(2, len(angle), height, width)


def gaussian_matrix(size: int, sigma: float, dtype=np.float32) -> np.ndarray:
    """(size, size) matrix ``G`` with ``G @ f`` = ``f`` convolved with a Gaussian along axis 0.

    The kernel is normalised over ``|offset| <= 4 sigma`` (like scipy's ``gaussian_filter``)
    and the signal is zero beyond the border (scipy's ``mode="constant"``), so rows near
    the edges sum to less than 1.
    """
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    radius = int(4.0 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    norm = np.exp(-0.5 * (taps / sigma) ** 2).sum()
    matrix = np.exp(-0.5 * (offsets / sigma) ** 2) / norm
    matrix[np.abs(offsets) > radius] = 0.0
    return matrix.astype(dtype)


def elastic_displacement(field: np.ndarray, alpha: float, sigma: float,
                         out: np.ndarray | None = None) -> np.ndarray:
    """Smooth random fields into elastic displacements (Simard et al., 2003).

    Parameters
    ----------
    field : (..., H, W)
        Raw random values.
    alpha : float
        Factor the smoothed field is multiplied by.
    sigma : float
        Std of the Gaussian, in pixels (see :func:`gaussian_matrix`).
    out : (..., H, W), optional
        Array for the result; may be ``field`` itself.

    Returns
    -------
    displacement : (..., H, W)
        ``alpha * G_H @ field @ G_W.T``: the Gaussian blur done as two batched matrix
        products (separable, no scipy).
    """
    height, width = field.shape[-2:]
    rows_blur = alpha * gaussian_matrix(height, sigma, field.dtype)
    cols_blur = gaussian_matrix(width, sigma, field.dtype)
    return np.matmul(rows_blur @ field, cols_blur.T, out=out)


def sample_bilinear(x: np.ndarray, positions: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Read each image at fractional positions, bilinearly; positions outside read ``fill``.

    Parameters
    ----------
    x : (N, C, H, W)
        Images.
    positions : (2, N, H, W)
        Input row ``[0]`` and column ``[1]`` read by each output pixel; row 0 / column 0
        is the first pixel. Finite; not modified.
    fill : float, default 0.0
        Finite value outside the image.

    Returns
    -------
    out : (N, C, H, W)
        New array of ``x.dtype``.
    """
    _check_images(x)
    _check_fill(fill)
    n, _, height, width = x.shape
    if positions.shape != (2, n, height, width):
        raise ValueError(f"positions must have shape {(2, n, height, width)}, got {positions.shape}")
    if not np.isfinite(positions).all():
        raise ValueError("positions must be finite")
    return _sample_bilinear_into(x, positions.astype(x.dtype), fill)


def _sample_bilinear_into(x: np.ndarray, positions: np.ndarray, fill: float) -> np.ndarray:
    """:func:`sample_bilinear`, overwriting ``positions`` ((2, N, H, W) of ``x.dtype``).

    The four neighbours of every position are gathered for the whole batch with flat
    indices into a copy of ``x`` framed by ``fill`` (one pixel before, two after). Clipping
    positions to the frame keeps every index valid and makes far-off positions read pure
    ``fill``. On small images the cost is memory traffic and fresh pages, not flops: hence
    in-place arithmetic and few, reused buffers.
    """
    n, channels, height, width = x.shape
    framed_h, framed_w = height + 3, width + 3
    framed = np.full((n, channels, framed_h, framed_w), fill, dtype=x.dtype)
    framed[:, :, 1:height + 1, 1:width + 1] = x
    top, step, bottom = (np.empty(x.shape, x.dtype) for _ in range(3))

    limits = np.array([height, width], dtype=x.dtype)[:, None, None, None]
    np.clip(positions, -1, limits, out=positions)
    rows, cols = positions  # (N, H, W) each; they become the fractional parts below
    row_floor, col_floor = top[:, 0], step[:, 0]  # scratch until the gathers
    np.floor(rows, out=row_floor)
    np.floor(cols, out=col_floor)
    rows -= row_floor
    cols -= col_floor
    # Flat offset of the top-left neighbour inside its image's frame, minus (framed_w + 1)
    # for the frame (added back below): small integers, exact in floating point.
    row_floor *= framed_w
    row_floor += col_floor
    index = row_floor.astype(np.intp)
    index += (np.arange(n) * (channels * framed_h * framed_w) + framed_w + 1)[:, None, None]
    index = index[:, None]  # (N, 1, H, W)
    if channels > 1:
        index = index + (np.arange(channels) * (framed_h * framed_w))[None, :, None, None]
    row_weight, col_weight = rows[:, None], cols[:, None]  # (N, 1, H, W)

    # ``flat[k:]`` reads the neighbour k elements on without index arithmetic; mode="wrap"
    # writes straight into ``out`` (the indices are all valid anyway). Lerp form, in place:
    # a zero weight returns the neighbour exactly, so integer shifts are exact.
    flat = framed.reshape(-1)
    np.take(flat, index, out=top, mode="wrap")
    np.take(flat[1:], index, out=step, mode="wrap")
    step -= top
    step *= col_weight
    top += step  # top row
    np.take(flat[framed_w:], index, out=bottom, mode="wrap")
    np.take(flat[framed_w + 1:], index, out=step, mode="wrap")
    step -= bottom
    step *= col_weight
    bottom += step  # bottom row
    bottom -= top
    bottom *= row_weight
    top += bottom
    return top


def _check_fill(fill: float) -> None:
    if not math.isfinite(fill):
        raise ValueError(f"fill must be finite, got {fill!r}")


def _check_images(x: np.ndarray) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype not in (np.float32, np.float64):
        raise ValueError(f"x must be an (N, C, H, W) float32 or float64 array, got "
                         f"{getattr(x, 'shape', type(x).__name__)} {getattr(x, 'dtype', '')}")
