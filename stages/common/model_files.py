"""The trained model on disk (``model.npz``, ``model.json``, ``preprocessing.json``) and its input transform.

:func:`write_model` writes the three files into a directory (the train stage's staging
area, which it swaps in whole); :func:`read_model` loads them and turns any damage (a
missing, empty, truncated or foreign file) into one :class:`LenetError` line naming the file.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

import nn
from stages.common.outputs import write_json
from stages.common.errors import LenetError, first_line

from stages.common.paths import MODELS
WEIGHTS, CONFIG, PREPROCESSING = "model.npz", "model.json", "preprocessing.json"
RETRAIN = "run `dvc repro -f -s train` to make a new one"
IMAGE_SHAPE = (1, 28, 28)  # one input image: channels, height, width


def normalize_pixels(pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The model's input transform: ``(pixels / 255 - mean) / std``.

    Each of the 256 possible values is transformed once in float64 and rounded to float32
    (a lookup table): the result is exact and does not depend on how it is computed.

    Parameters
    ----------
    pixels : (N, 28, 28) or (N, 1, 28, 28) uint8
        0 = background.
    mean, std : float
        From the training split (``Split.metadata["mean"]``, ``["std"]``).

    Returns
    -------
    images : (N, 1, 28, 28) float32
        A new C-contiguous array.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8 (0-255), got {pixels.dtype}")
    if pixels.shape[1:] not in (IMAGE_SHAPE, IMAGE_SHAPE[1:]):
        raise ValueError(f"pixels must be (N, 28, 28) or (N, 1, 28, 28), got {pixels.shape}")
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"need a finite mean and std > 0, got mean={mean}, std={std}")
    table = ((np.arange(256, dtype=np.float64) / 255.0 - mean) / std).astype(np.float32)
    return table[pixels].reshape(len(pixels), *IMAGE_SHAPE)


def blank_value(mean: float, std: float) -> float:
    """What a blank (0) pixel becomes after :func:`normalize_pixels`.

    The fill value for pixels that augmentation moves in from outside the image.
    """
    return (0.0 - mean) / std


def write_model(directory: Path, model, config: dict, preprocessing: dict) -> None:
    """Weights, architecture and the input normalization, as three files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / WEIGHTS, "wb") as weights, open(directory / CONFIG, "w", encoding="utf-8") as config_file:
        nn.save_model(model, config, weights, config_file)
    write_json(directory / PREPROCESSING, preprocessing)


def _damaged(path: Path, what: str) -> LenetError:
    return LenetError(f"{path}: {what}; {RETRAIN}")


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _damaged(path, "not valid JSON") from None
    if not isinstance(value, dict):
        raise _damaged(path, "not a JSON object")
    return value


def read_model(directory: Path = MODELS):
    """``(model, config, preprocessing)`` from ``directory``; LenetError if any file is damaged."""
    weights, config = directory / WEIGHTS, directory / CONFIG
    for path in (weights, config, directory / PREPROCESSING):
        if not path.is_file():
            raise LenetError(f"{path}: missing (run the train stage first)")
        if path.stat().st_size == 0:
            raise _damaged(path, "empty file")
    if not zipfile.is_zipfile(weights):
        raise _damaged(weights, "not an .npz archive")
    preprocessing = _read_json(directory / PREPROCESSING)
    if not {"mean", "std"} <= preprocessing.keys():
        raise _damaged(directory / PREPROCESSING, "has no mean and std")
    _read_json(config)
    try:
        with open(weights, "rb") as weights_file, open(config, encoding="utf-8") as config_file:
            model, config_values = nn.load_model(weights_file, config_file)
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, TypeError) as error:
        reason = first_line(error)
        if "pickle" in reason:  # numpy's advice to allow pickles is never right for a model
            reason = "holds an object array, which no saved model does"
        raise _damaged(weights, f"corrupt or does not fit {config.name} ({reason})") from None
    return model, config_values, preprocessing
