"""Parse and validate MNIST's IDX files (http://yann.lecun.com/exdb/mnist/, "file formats").

An IDX file is a big-endian header, then the data as one C-ordered block:

    magic: 4 bytes = 0x00 0x00 <dtype> <ndim>   (dtype 0x08 = unsigned byte)
    dims:  ndim big-endian uint32               (images: N, 28, 28; labels: N)
    data:  prod(dims) bytes

Every check fails with a one-line :class:`LenetError` naming the file and what was expected
versus found, so a corrupt file never becomes a silently wrong dataset. Parsing is one
``np.frombuffer`` over the file's bytes: no copy, no Python loop over images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.common.errors import LenetError

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10


def header(magic: int, *dims: int) -> bytes:
    """The IDX header of an unsigned-byte file of shape ``dims``."""
    return np.array([magic, *dims], dtype=">u4").tobytes()


def _parse(data: bytes, name: str, magic: int, what: str) -> np.ndarray:
    """Check the header of an unsigned-byte IDX file; return its data, shaped (read-only uint8)."""
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise LenetError(f"{name}: file is {len(data)} bytes, expected at least {header_size} "
                         f"(the IDX header of {what})")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise LenetError(f"{name}: magic number 0x{found:08X}, expected 0x{magic:08X} "
                         f"(IDX, dtype 0x08 unsigned byte, {ndim} dimension(s): {what})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if dims[0] < 1:
        raise LenetError(f"{name}: header says 0 {what}, expected at least 1")
    expected = header_size + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise LenetError(f"{name}: file is {len(data)} bytes, expected {expected} for the header's "
                         f"{' x '.join(map(str, dims))} {what} "
                         f"({'truncated' if len(data) < expected else 'trailing bytes'})")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def parse_images(data: bytes, name: str) -> np.ndarray:
    """Parse an IDX image file's bytes (``name``: for errors) into a read-only view ``(N, 28, 28) uint8``."""
    images = _parse(data, name, IMAGES_MAGIC, "images")
    if images.shape[1:] != IMAGE_SIZE:
        raise LenetError(f"{name}: images are {images.shape[1]}x{images.shape[2]}, "
                         f"expected {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}")
    return images


def parse_labels(data: bytes, name: str) -> np.ndarray:
    """Parse an IDX label file's bytes into labels ``(N,) uint8``, each checked to be in 0–9."""
    labels = _parse(data, name, LABELS_MAGIC, "labels")
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise LenetError(f"{name}: label {labels[bad[0]]} at index {bad[0]}, expected 0-{NUM_CLASSES - 1} "
                         f"({bad.size} label(s) out of range)")
    return labels


@dataclass(frozen=True)
class LabelledImages:
    """One image file with its label file, validated together.

    Attributes
    ----------
    images : (N, 28, 28) uint8
    labels : (N,) uint8
        In 0–9.
    sha256 : dict[str, str]
        ``{file name: SHA-256 hex digest of the whole file}``, for provenance.
    """

    images: np.ndarray
    labels: np.ndarray
    sha256: dict[str, str]


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise LenetError(f"{path}: file not found (expected an uncompressed IDX file)")
    return path.read_bytes()  # other OSErrors (permissions) are one line at the stage's boundary


def read_labelled_images(images_path: str | Path, labels_path: str | Path) -> LabelledImages:
    """Read, hash and validate an IDX image file and its label file (same number of items)."""
    images_path, labels_path = Path(images_path), Path(labels_path)
    images_bytes, labels_bytes = _read_bytes(images_path), _read_bytes(labels_path)
    images = parse_images(images_bytes, str(images_path))
    labels = parse_labels(labels_bytes, str(labels_path))
    if len(images) != len(labels):
        raise LenetError(f"{labels_path}: {len(labels)} labels, expected {len(images)} "
                         f"(one per image in {images_path})")
    sha256 = {path.name: hashlib.sha256(data).hexdigest()
              for path, data in ((images_path, images_bytes), (labels_path, labels_bytes))}
    return LabelledImages(images, labels, sha256)
