"""Decode an image file or an uploaded image into a uint8 array, refusing what is not one.

Pillow does the decoding (PNG, JPEG, BMP, GIF): the maintained, standard Python imaging
library, already installed with matplotlib. ``Image.open`` reads only the header, so the
pixel count is checked *before* anything is decoded: a small file claiming a huge image
(a decompression bomb) is refused without allocating its pixels.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "BMP", "GIF")
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_PIXELS = 25_000_000  # 5000 x 5000: a phone photo fits (README: memory and time it takes)
MAX_ASPECT = 100  # a longer side over 100 times the shorter is a strip, not a picture of a digit
ROW_PIXELS = 1 << 20  # 16-bit images are scaled to 8 bits about this many pixels at a time
# Pillow warns above its own limit (89 Mpx) before ours refuses on the header: our line suffices.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageError(ValueError):
    """The bytes are not a usable image; the message says why (without the file's name)."""


def decode(data: bytes | BinaryIO, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode one image.

    Parameters
    ----------
    data : bytes or binary file
        The image's bytes, or a binary file open at its start (PNG, JPEG, BMP or GIF;
        GIF: the first frame). A file is read only as far as needed: the header first.
    max_pixels : int, default MAX_PIXELS
        Refuse larger images, checked on the header's size before decoding.

    Returns
    -------
    pixels : uint8 (H, W) grey, (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA
        Upright (a JPEG's EXIF orientation applied).

    Raises
    ------
    ImageError
        Empty, not an image of these formats, too large, truncated or corrupt.
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    if not stream.read(1):
        raise ImageError("empty (0 bytes), expected a PNG or JPEG image")
    stream.seek(0)
    try:
        image = Image.open(stream, formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"not an image ({', '.join(FORMATS)} expected)") from None
    except Image.DecompressionBombError as error:  # Pillow's own limit, far above ours
        raise ImageError(f"image too large: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:  # a recognised but broken header
        raise ImageError(f"corrupt image header ({error})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"image is {width}x{height} = {width * height:,} pixels, "
                         f"more than the limit of {max_pixels:,}; scale it down first")
    if width == 0 or height == 0:
        raise ImageError(f"image is {width}x{height}: no pixels")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"image is {width}x{height}: one side is over {MAX_ASPECT} times the other, "
                         "a strip rather than a picture of one digit")
    try:
        image.load()  # decodes; a truncated file fails here
        ImageOps.exif_transpose(image, in_place=True)  # a copy only when there is something to turn
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"cannot decode the {image.format} image ({error}); truncated or corrupt?") from None
    # Palette, 16-bit, CMYK, ...: bring every mode to one of the four grey/colour layouts.
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        if image.mode in ("I", "I;16", "I;16B", "F"):  # 16-bit / float grey: scale to 8 bits
            values = np.asarray(image)
            top, gray = max(float(values.max()), 255.0), np.empty(values.shape, dtype=np.uint8)
            rows = max(1, ROW_PIXELS // width)  # a few MB of float64 at a time, not 8 bytes per pixel
            for start in range(0, height, rows):
                gray[start:start + rows] = np.round(np.clip(values[start:start + rows] / top, 0, 1) * 255)
            return gray
        image = image.convert("RGBA" if has_alpha else "RGB")
    return np.asarray(image, dtype=np.uint8)


NOT_FILES = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
             stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _refuse_unless_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise ImageError(f"is {NOT_FILES.get(stat.S_IFMT(mode), 'not a regular file')}, expected an image file")


def read(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read and :func:`decode` the image file at ``path``.

    Only a regular file is opened (links followed): a FIFO would block the read forever and
    a device (``/dev/zero``) never ends, so both are refused by their type, before opening
    and again on the opened file (in case one was swapped in between).

    Raises
    ------
    ImageError
        The file is missing, unreadable, not a regular file or not a usable image.
    """
    try:
        _refuse_unless_regular(os.stat(path).st_mode)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO swapped in: no wait
        with open(descriptor, "rb") as handle:
            _refuse_unless_regular(os.fstat(descriptor).st_mode)
            return decode(handle, max_pixels)
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as error:  # unreadable (permissions, I/O, link loops); decoding errors are ImageErrors
        raise ImageError(f"cannot read ({error.strerror or error})") from None


def expand(paths: list[Path]) -> list[Path]:
    """Files given, with each directory replaced by its entries named like images (sorted).

    Entries are kept whatever they are but directories (a FIFO, a broken link), and so is
    a path that does not exist: :func:`read` says what is wrong with each, on its own line.
    """
    files = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and not p.is_dir()))
        else:
            files.append(path)
    return files
