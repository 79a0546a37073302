"""Turn any picture of one digit into the 28x28 input MNIST's digits were made as.

MNIST (LeCun et al.): each digit was scaled to fit a 20x20 box keeping its aspect ratio
(anti-aliased, so grey levels appear), then placed in a 28x28 field so that its centre of
mass sits at the field's centre; ink is bright (255) on a black (0) background. This module
repeats those steps on an arbitrary image, with pure array functions (no files, no
decoding), shared by ``lenet predict`` and ``lenet serve``:

    grayscale -> ink (detect a light background, invert) -> crop to the ink's bounding box
    -> fit_box (scale to fit 20x20) -> center_by_mass (28x28) -> uint8 -> normalize

The normalization itself is the pipeline's (:func:`stages.common.model_files.normalize_pixels`)
with the mean and std stored beside the model, so training and prediction cannot drift apart.
"""

from __future__ import annotations

import numpy as np

from stages.common.model_files import normalize_pixels

FIELD = 28  # MNIST's image side
BOX = 20  # the side of the box MNIST's digits were scaled to fit
INK_THRESHOLD = 0.1  # ink fraction (0 background, 1 darkest stroke) below which a pixel is background
MIN_CONTRAST = 0.1  # an image whose pixels all lie within this of the background has no digit

# ITU-R BT.601 luma, as Pillow's convert("L") and MNIST-era scanners use.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
ROWS_PER_BAND = 256


class NoDigit(ValueError):
    """The image holds no ink: every pixel is (close to) the background."""


def grayscale(pixels: np.ndarray) -> np.ndarray:
    """Grey levels of an image, 0 = black, 1 = white.

    Parameters
    ----------
    pixels : uint8 (H, W) grey, (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA
        The image as decoded. Transparent pixels are composited onto white (as a viewer
        shows them).

    Returns
    -------
    gray : (H, W) float32
        In [0, 1].
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        return pixels.astype(np.float32) / 255
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"pixels must be (H, W) or (H, W, 1-4), got {pixels.shape}")
    channels = pixels.shape[2]
    gray = np.empty(pixels.shape[:2], dtype=np.float32)
    # A band of rows at a time: a 25-megapixel photo never needs a float copy of all its channels.
    for start in range(0, len(pixels), ROWS_PER_BAND):
        band = pixels[start:start + ROWS_PER_BAND]
        out = gray[start:start + ROWS_PER_BAND]
        out[:] = band[..., :3].astype(np.float32) @ LUMA if channels >= 3 else band[..., 0]
        out /= 255
        if channels in (2, 4):  # alpha: blend with white
            alpha = band[..., -1].astype(np.float32) / 255
            out *= alpha
            out += 1 - alpha
    return gray


def ink(gray: np.ndarray) -> np.ndarray:
    """How much ink each pixel holds, whatever the paper: 0 = background, 1 = strongest stroke.

    The background's grey level is the median of the image's border (a digit rarely fills
    the border, paper always does). A light background (> 0.5) means dark ink: the image
    is inverted. The contrast is then stretched so the strongest stroke is 1, as MNIST's
    strokes reach 255, and faint noise (paper texture, JPEG ringing) below
    ``INK_THRESHOLD`` is set to 0.

    Parameters
    ----------
    gray : (H, W) float
        In [0, 1], from :func:`grayscale`.

    Returns
    -------
    ink : (H, W) float32
        In [0, 1].

    Raises
    ------
    NoDigit
        If no pixel differs from the background by ``MIN_CONTRAST`` or more.
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"gray must be a non-empty (H, W) array, got {gray.shape}")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    signal = background - gray if background > 0.5 else gray - background
    strongest = float(signal.max())
    if strongest < MIN_CONTRAST:
        raise NoDigit(f"no digit: every pixel is within {MIN_CONTRAST:.0%} of the background's grey level")
    signal /= strongest  # in place: large photos need no second full-size copy
    signal[signal < INK_THRESHOLD] = 0
    return np.minimum(signal, 1, out=signal)


def crop_to_ink(ink_image: np.ndarray) -> np.ndarray:
    """The smallest rectangle holding every non-zero pixel.

    Parameters
    ----------
    ink_image : (H, W) float
        0 = background (from :func:`ink`).

    Returns
    -------
    crop : (h, w)
        A view of ``ink_image``, h <= H, w <= W.
    """
    rows, cols = np.flatnonzero(ink_image.any(axis=1)), np.flatnonzero(ink_image.any(axis=0))
    if rows.size == 0:
        raise NoDigit("no digit: the image is blank")
    return ink_image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def resample_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Weights that resize one axis with a linear (triangle) filter, anti-aliased.

    Output pixel ``i`` is centred at input coordinate ``c = (i + 0.5) * size_in / size_out - 0.5``
    and averages the input pixels ``j`` with weights ``max(0, 1 - |j - c| / s)``, where the
    support ``s = max(1, size_in / size_out)`` widens when shrinking so that every input pixel
    contributes (no aliasing: thin strokes never vanish); weights are normalized to sum 1.

    Parameters
    ----------
    size_in, size_out : int
        Pixels along the axis before and after.

    Returns
    -------
    weights : (size_out, size_in) float32
        ``weights @ column`` resizes a column.
    """
    scale = size_in / size_out
    support = max(1.0, scale)
    centres = (np.arange(size_out) + 0.5) * scale - 0.5
    distance = np.abs(np.arange(size_in)[None, :] - centres[:, None]) / support
    weights = np.maximum(0.0, 1.0 - distance)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_box(crop: np.ndarray, box: int = BOX) -> np.ndarray:
    """Scale a digit so its longer side is ``box`` pixels, keeping its aspect ratio.

    Parameters
    ----------
    crop : (h, w) float
        The digit cropped to its ink.
    box : int, default BOX
        Pixels of the longer side.

    Returns
    -------
    fitted : (h', w') float32
        With max(h', w') == box and min(h', w') >= 1.
    """
    h, w = crop.shape
    scale = box / max(h, w)
    out_h, out_w = max(1, round(h * scale)), max(1, round(w * scale))
    return resample_matrix(h, out_h) @ crop.astype(np.float32) @ resample_matrix(w, out_w).T


def center_by_mass(digit: np.ndarray, field: int = FIELD) -> np.ndarray:
    """Place ``digit`` in a ``field`` x ``field`` canvas with its centre of mass at the centre.

    Pixel centres are at integer positions and the centre of mass goes to pixel
    ``(field // 2, field // 2)``, (14, 14) for MNIST: where MNIST's own digits have theirs
    (test set: mean row 13.99, mean column 14.01, 0-based). The shift is whole pixels
    (rounded), as MNIST's was, and limited so the whole digit stays inside the canvas (a
    lopsided digit is then a little off centre, never clipped).

    Parameters
    ----------
    digit : (h, w) float
        h, w <= field, not all zero.
    field : int, default FIELD
        Side of the canvas.

    Returns
    -------
    canvas : (field, field) float32

    Raises
    ------
    NoDigit
        If ``digit`` sums to 0 or less (a blank image).
    """
    h, w = digit.shape
    total = float(digit.sum())
    if total <= 0:
        raise NoDigit("no digit: the image is blank")
    row = float(digit.sum(axis=1) @ np.arange(h)) / total
    col = float(digit.sum(axis=0) @ np.arange(w)) / total
    top = min(max(round(field // 2 - row), 0), field - h)
    left = min(max(round(field // 2 - col), 0), field - w)
    canvas = np.zeros((field, field), dtype=np.float32)
    canvas[top:top + h, left:left + w] = digit
    return canvas


def mnist_pixels(pixels: np.ndarray) -> np.ndarray:
    """Any decoded image of one digit -> the 28x28 uint8 image MNIST would hold for it.

    Parameters
    ----------
    pixels : uint8 (H, W), (H, W, 2), (H, W, 3) or (H, W, 4)
        See :func:`grayscale`.

    Returns
    -------
    digit : (28, 28) uint8
        0 = background, 255 = ink, centred by mass in a 20x20 box.

    Raises
    ------
    NoDigit
        If the image is blank (one colour, or differences below ``MIN_CONTRAST``).
    """
    canvas = center_by_mass(fit_box(crop_to_ink(ink(grayscale(pixels)))))
    return np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)


def model_input(digit: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The network's input for one MNIST-style digit: the pipeline's normalization.

    Parameters
    ----------
    digit : (28, 28) uint8
        From :func:`mnist_pixels`.
    mean, std : float
        From the model's ``preprocessing.json``.

    Returns
    -------
    x : (1, 1, 28, 28) float32
    """
    return normalize_pixels(digit[None], mean, std)
