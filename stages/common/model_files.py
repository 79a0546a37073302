"""The trained model on disk: ``models/model.npz``, ``model.json``, ``preprocessing.json``.

:func:`write_model` writes the three files into a directory (the train stage's staging
area, which it swaps in whole); :func:`read_model` loads them and turns any damage (a
missing, empty, truncated or foreign file) into one :class:`StageError` line naming the file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nn
from stages.common.atomic import write_json
from stages.common.errors import StageError, first_line

MODELS = Path("models")
WEIGHTS, CONFIG, PREPROCESSING = "model.npz", "model.json", "preprocessing.json"
RETRAIN = "run `dvc repro -f -s train` to make a new one"


def write_model(directory: Path, model, config: dict, preprocessing: dict) -> None:
    """Weights, architecture and the input normalization, as three files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / WEIGHTS, "wb") as weights, open(directory / CONFIG, "w", encoding="utf-8") as config_file:
        nn.save_model(model, config, weights, config_file)
    write_json(directory / PREPROCESSING, preprocessing)


def _damaged(path: Path, what: str) -> StageError:
    return StageError(f"{path}: {what}; {RETRAIN}")


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _damaged(path, "not valid JSON") from None
    if not isinstance(value, dict):
        raise _damaged(path, "not a JSON object")
    return value


def read_model(directory: Path = MODELS):
    """``(model, config, preprocessing)`` from ``directory``; StageError if any file is damaged."""
    weights, config = directory / WEIGHTS, directory / CONFIG
    for path in (weights, config, directory / PREPROCESSING):
        if not path.is_file():
            raise StageError(f"{path}: missing (run the train stage first)")
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
