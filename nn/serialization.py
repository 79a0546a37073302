"""Save a LeNet-5 as ``.npz`` weights plus a ``.json`` of its ``lenet5`` arguments.

No pickle anywhere: the weights load with ``np.load(allow_pickle=False)``, so a model file
from elsewhere cannot run code, and both files are plain, portable and DVC-hashable. Both
functions work on open file objects: where the bytes go, and how they replace an older
model atomically, is the caller's business (the train stage stages its outputs).
"""

from __future__ import annotations

import inspect
import io
import json
import zipfile
from typing import IO

import numpy as np

from nn.lenet import lenet5
from nn.module import Module, Sequential

# lenet5's keyword arguments a config may hold (rng is never saved: the weights are).
CONFIG_KEYS = tuple(name for name in inspect.signature(lenet5).parameters if name != "rng")

# Every header field of every zip entry, fixed: zipfile's defaults (create_system from the
# platform, versions, permissions, flags) have changed between Python patch releases, and a
# different byte means a different DVC hash for the same weights.
_ZIP_HEADER = {
    "date_time": (1980, 1, 1, 0, 0, 0),  # the earliest a zip can hold; np.savez stamps "now"
    "compress_type": zipfile.ZIP_STORED,
    "create_system": 3,                  # Unix
    "create_version": 45,                # 4.5: ZIP64, which every entry uses (force_zip64)
    "extract_version": 45,
    "flag_bits": 0,
    "external_attr": 0o100644 << 16,     # a regular file, rw-r--r--
    "internal_attr": 0,
    "volume": 0,
    "reserved": 0,
    "comment": b"",
    "extra": b"",
}


def _zip_entry(name: str) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name, date_time=_ZIP_HEADER["date_time"])
    for field, value in _ZIP_HEADER.items():
        setattr(entry, field, value)
    return entry


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


def write_npz(handle: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez``, but the same arrays always give the same bytes.

    The archive is built in memory (so whether ``handle`` can seek changes no flag) from
    entries whose every header field is set explicitly (``_ZIP_HEADER``).
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            with archive.open(_zip_entry(f"{name}.npy"), "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, np.asarray(value), allow_pickle=False)
    handle.write(buffer.getvalue())


def save_model(model: Module, config: dict, weights: IO[bytes], config_file: IO[str]) -> None:
    """Write ``model``'s weights as ``.npz`` and the config that rebuilds it as JSON.

    Parameters
    ----------
    model : Module
        Its ``state_dict()`` is written to ``weights``.
    config : dict
        The ``lenet5`` keyword arguments that rebuild ``model``.
    weights : binary file object
        Receives the ``.npz``.
    config_file : text file object
        Receives ``config`` as JSON.

    Raises
    ------
    ValueError
        If ``config`` has keys that are not ``lenet5`` arguments.
    """
    config = _json_config(config)
    write_npz(weights, model.state_dict())
    config_file.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_model(weights: IO[bytes], config_file: IO[str]) -> tuple[Sequential, dict]:
    """Rebuild the model saved by ``save_model``.

    Parameters
    ----------
    weights : binary file object
        The ``.npz`` written by ``save_model``.
    config_file : text file object
        Its JSON config.

    Returns
    -------
    model : Sequential
    config : dict
        The ``lenet5`` keyword arguments read from ``config_file``.

    Raises
    ------
    ValueError
        If the config is not JSON, has unknown keys or the weights do not fit the
        architecture it describes (naming the offending tensors).
    zipfile.BadZipFile, EOFError, ValueError
        Whatever ``np.load`` raises for a damaged archive.
    """
    config = json.load(config_file)
    if not isinstance(config, dict):
        raise ValueError("the config must hold a JSON object of lenet5 arguments")
    _json_config(config)  # validates the keys
    # The generator only fills weights that load_state_dict overwrites at once.
    model = lenet5(**config, rng=np.random.default_rng(0))
    with np.load(weights, allow_pickle=False) as archive:
        state = {name: archive[name] for name in archive.files}
    model.load_state_dict(state, strict=True)
    return model, config
