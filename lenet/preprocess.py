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
from PIL import Image

from stages.common.model_files import normalize_pixels

FIELD = 28  # MNIST's image side
BOX = 20  # the side of the box MNIST's digits were scaled to fit
INK_THRESHOLD = 0.1  # ink fraction (0 background, 1 darkest stroke) below which a pixel is background
MIN_CONTRAST = 0.1  # an image whose pixels all lie within this of the background has no digit

# ITU-R BT.601 luma, as Pillow's convert("L") and MNIST-era scanners use.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
MARK_LEVEL = 64  # of 255: fainter, anti-aliased edges do not join two marks
# Pixels per step of the whole-image passes: their temporaries stay a few MB whatever the shape.
CHUNK = 1 << 20
# fit_box averages crops down by whole factors until they are within this many times the box.
REDUCING_GAP = 64


class NoDigit(ValueError):
    """The image holds no ink: every pixel is (close to) the background."""


def _chunks(flat: np.ndarray):
    """Consecutive views of at most ``CHUNK`` elements (rows of a 2-D ``flat``)."""
    return (flat[start:start + CHUNK] for start in range(0, len(flat), CHUNK))


def grayscale(pixels: np.ndarray) -> np.ndarray:
    """Grey levels of an image, 0 = black, 1 = white.

    Parameters
    ----------
    pixels : uint8 (H, W) grey, (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA
        The image as decoded. Transparent pixels are composited onto white, as a viewer
        shows them; or onto black when the visible pixels are mostly light (white ink on a
        transparent background, which white would hide).

    Returns
    -------
    gray : (H, W) float32
        In [0, 1]. The only full-size array made: the passes go ``CHUNK`` pixels at a time.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"pixels must be (H, W) or (H, W, 1-4), got {pixels.shape}")
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    gray = np.empty(pixels.shape[:2], dtype=np.float32)
    bands = list(zip(_chunks(np.ascontiguousarray(pixels).reshape(-1, channels)), _chunks(gray.reshape(-1))))
    visible = covered = 0.0  # alpha-weighted grey and alpha, summed
    for band, out in bands:
        out[:] = band[:, :3].astype(np.float32) @ LUMA if channels >= 3 else band[:, 0]
        out /= 255
        if channels in (2, 4):
            alpha = band[:, -1].astype(np.float32) / 255
            out *= alpha
            visible, covered = visible + float(out.sum(dtype=np.float64)), covered + float(alpha.sum(dtype=np.float64))
    if channels in (2, 4) and not (covered and visible / covered > 0.5):  # onto white
        for band, out in bands:
            out += 1 - band[:, -1].astype(np.float32) / 255
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
        In [0, 1], from :func:`grayscale`. Overwritten when it is a C-contiguous float32
        array: a 25-megapixel photo needs no second full-size copy.

    Returns
    -------
    ink : (H, W) float32
        In [0, 1].

    Raises
    ------
    NoDigit
        If no pixel differs from the background by ``MIN_CONTRAST`` or more.
    """
    gray = np.ascontiguousarray(gray, dtype=np.float32)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"gray must be a non-empty (H, W) array, got {gray.shape}")
    # The outermost pixels, each once (a one-pixel strip is all border), median taken in place.
    border = (np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]]) if min(gray.shape) > 1
              else gray.ravel().copy())
    background = float(np.median(border, overwrite_input=True))
    strongest = 0.0
    for chunk in _chunks(gray.reshape(-1)):
        if background > 0.5:
            np.subtract(background, chunk, out=chunk)
        else:
            chunk -= background
        strongest = max(strongest, float(chunk.max()))
    if strongest < MIN_CONTRAST:
        raise NoDigit(f"no digit: every pixel is within {MIN_CONTRAST:.0%} of the background's grey level")
    for chunk in _chunks(gray.reshape(-1)):
        chunk /= strongest
        chunk[chunk < INK_THRESHOLD] = 0
        np.minimum(chunk, 1, out=chunk)
    return gray


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


def float_image(values: np.ndarray) -> Image.Image:
    """A Pillow ``F`` (float32) image of ``values``, copied a few rows at a time.

    ``Image.fromarray`` of a cropped (strided) array would first copy it whole to bytes;
    row by row, the only full-size copy is Pillow's own.

    Parameters
    ----------
    values : (h, w) float

    Returns
    -------
    PIL.Image.Image
        Mode ``F``, size ``(w, h)``.
    """
    h, w = values.shape
    image = Image.new("F", (w, h))
    rows = max(1, CHUNK // w)
    for top in range(0, h, rows):
        image.paste(Image.fromarray(np.ascontiguousarray(values[top:top + rows], dtype=np.float32)), (0, top))
    return image


def fit_box(crop: np.ndarray, box: int = BOX) -> np.ndarray:
    """Scale a digit so its longer side is ``box`` pixels, keeping its aspect ratio.

    Pillow's bilinear resize: a triangle filter whose support widens with the shrink factor,
    so every input pixel contributes (anti-aliased: thin strokes never vanish). Crops over
    ``REDUCING_GAP`` times the box are first averaged down by a whole factor
    (``Image.reduce``), which keeps the filter's weights, and so the memory, small whatever
    the crop's shape.

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
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = float_image(crop).resize(size, Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
    return np.asarray(resized, dtype=np.float32)


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


def marks_side_by_side(digit: np.ndarray) -> int:
    """How many marks at least half the ink's height stand side by side, parted by blank columns.

    Two digits written next to each other (``12``) make 2; one digit makes 1, with or
    without a stray speck or a short detached stroke (the flag of a 5).

    Parameters
    ----------
    digit : (28, 28) uint8
        From :func:`mnist_pixels`.

    Returns
    -------
    int
        0 for a blank digit.
    """
    inked = digit >= MARK_LEVEL
    rows = np.flatnonzero(inked.any(axis=1))
    if rows.size == 0:
        return 0
    # Runs of inked columns: where the column profile steps up (starts) and down (ends).
    steps = np.flatnonzero(np.diff(np.concatenate([[0], inked.any(axis=0), [0]]).astype(np.int8)))
    tall = 0
    for start, end in zip(steps[::2], steps[1::2]):
        run_rows = np.flatnonzero(inked[:, start:end].any(axis=1))
        if 2 * (run_rows[-1] - run_rows[0] + 1) >= rows[-1] - rows[0] + 1:
            tall += 1
    return tall


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
