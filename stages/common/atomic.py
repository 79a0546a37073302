"""Write files all at once or not at all: a crash never leaves a half-written output."""

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    On any exception (or signal turned into one) the temporary file is removed and ``path``
    is left untouched. The temporary file sits beside ``path``, so stages write only into
    their staging area (:mod:`stages.common.outputs`), never into an output directory: a
    SIGKILL can then leave a ``.*.tmp`` only where DVC does not look. The file gets the
    permissions a plain ``open()`` would (``0666`` less the umask), like every output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, mode) as handle:
            os.chmod(tmp_name, 0o666 & ~current_umask())  # mkstemp makes it 0600
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if tmp_name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        raise


def current_umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON (stable diffs in review)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
