"""Save a LeNet-5 as ``.npz`` weights plus a sibling ``.json`` of its ``lenet5`` arguments.

No pickle anywhere: the weights load with ``np.load(allow_pickle=False)``, so a model file
from elsewhere cannot run code, and both files are plain, portable and DVC-hashable.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from nn.lenet import lenet5
from nn.module import Module, Sequential

# lenet5's keyword arguments a config may hold (rng is never saved: the weights are).
CONFIG_KEYS = tuple(name for name in inspect.signature(lenet5).parameters if name != "rng")


def config_path(path_npz: str | os.PathLike) -> Path:
    """The JSON file beside ``path_npz``: ``model.npz`` -> ``model.json``."""
    return Path(path_npz).with_suffix(".json")


def _replace_atomically(path: Path, write) -> None:
    # Temp file in the same directory + os.replace: a crash never leaves half a model.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_config(config: dict) -> dict:
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"config keys {unknown} are not lenet5 arguments ({', '.join(CONFIG_KEYS)})")
    config = dict(config)
    if "dtype" in config:
        config["dtype"] = np.dtype(config["dtype"]).name  # np.float32 -> "float32"
    for key in ("channels", "hidden"):
        if key in config:
            config[key] = [int(v) for v in config[key]]
    return config


def write_npz(handle, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez``, but reproducible byte for byte: ``np.savez`` stamps each entry with
    the current time, so identical weights would get a new file hash (and DVC would see a
    change) on every run."""
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(entry, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, np.asarray(value), allow_pickle=False)


def save_model(model: Module, config: dict, path_npz: str | os.PathLike) -> None:
    """Write ``model.state_dict()`` to ``path_npz`` and ``config`` (the ``lenet5`` keyword
    arguments that rebuild ``model``) to ``config_path(path_npz)``, each atomically."""
    path = Path(path_npz)
    if path.suffix != ".npz":
        raise ValueError(f"model path must end in .npz, got {path}")
    config = _json_config(config)
    state = model.state_dict()
    _replace_atomically(path, lambda handle: write_npz(handle, state))
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    _replace_atomically(config_path(path), lambda handle: handle.write(text.encode()))


def load_model(path_npz: str | os.PathLike) -> tuple[Sequential, dict]:
    """Rebuild the model saved by ``save_model``: ``(model, config)``.

    Raises ValueError if the config has unknown keys or the weights do not fit the
    architecture it describes (naming the offending tensors).
    """
    path = Path(path_npz)
    config = json.loads(config_path(path).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{config_path(path)} must hold a JSON object of lenet5 arguments")
    _json_config(config)  # validates the keys
    # The generator only fills weights that load_state_dict overwrites at once.
    model = lenet5(**config, rng=np.random.default_rng(0))
    with np.load(path, allow_pickle=False) as archive:
        state = {name: archive[name] for name in archive.files}
    model.load_state_dict(state, strict=True)
    return model, config
