"""The trained model on disk (``model.npz``, ``model.json``, ``preprocessing.json``) and its input transform.

:func:`write_model` writes the three files into a directory; :func:`read_model` loads them
and turns any damage (a missing, empty, truncated or foreign file, a value out of bounds, a
weight that is NaN) into one :class:`LenetError` line naming the file. Every number is checked before anything
is allocated: ``model.json`` by the rules params.yaml's ``train`` section obeys
(:class:`ModelConfig`), ``preprocessing.json`` by :class:`Preprocessing`, and the sizes
``model.json`` gives against the array shapes in ``model.npz``'s headers.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import zipfile
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

import nn
from stages.common.errors import LenetError, first_line
from stages.common.outputs import write_json
from stages.common.params import Section, TrainParams, _one_line
from stages.common.paths import MODELS

WEIGHTS, CONFIG, PREPROCESSING = "model.npz", "model.json", "preprocessing.json"
RETRAIN = "run `dvc repro -f -s train` to make a new one"
IMAGE_SHAPE = (1, 28, 28)  # one input image: channels, height, width


def _train_rule(name: str):
    """The type, bounds included, that params.yaml's ``train.<name>`` must have."""
    field = TrainParams.model_fields[name]
    return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


_DEFAULTS = {name: p.default for name, p in inspect.signature(nn.lenet5).parameters.items()}
# model.json: the nn.lenet5 arguments, each by its train param's rule; a key left out takes lenet5's default.
ModelConfig = create_model(
    "ModelConfig", __base__=Section,
    **{name: (_train_rule(name), _DEFAULTS[name])
       for name in ("activation", "leaky_slope", "pool", "channels", "hidden", "dropout", "init")},
    num_classes=(Annotated[int, Field(ge=1, le=65_536)], _DEFAULTS["num_classes"]),
    dtype=(Literal["float32", "float64"], "float32"))
# model.json's sizes, and the weight whose first axis holds each: compared before building.
SIZES = {("channels", 0): "conv1.weight", ("channels", 1): "conv2.weight", ("hidden", 0): "fc1.weight",
         ("hidden", 1): "fc2.weight", ("num_classes", None): "fc3.weight"}


class Preprocessing(BaseModel):
    """``preprocessing.json``: the mean and std inputs are normalized with, on pixels scaled to [0, 1]."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    mean: float = Field(ge=0, le=1)
    # A tiny std would blow every input up to inf; the widest is 256/255, for pixels / 256
    # (normalize.scale: unit256).
    std: float = Field(ge=1e-3, le=256 / 255)


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
    """What a blank (0) pixel becomes after :func:`normalize_pixels`: the fill for pixels augmentation moves in."""
    return (0.0 - mean) / std


def write_model(directory: Path, model, config: dict, preprocessing: dict) -> None:
    """Weights, architecture and the input normalization, as three files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / WEIGHTS, "wb") as weights, open(directory / CONFIG, "w", encoding="utf-8") as config_file:
        nn.save_model(model, config, weights, config_file)
    write_json(directory / PREPROCESSING, preprocessing)


def _damaged(path: Path, what: str) -> LenetError:
    return LenetError(f"{path}: {what}; {RETRAIN}")


def _validated(path: Path, schema: type[BaseModel]) -> tuple[BaseModel, dict]:
    """The JSON object in ``path`` as ``schema`` reads it, and as written (once ``schema`` accepts it)."""
    try:
        text = path.read_text(encoding="utf-8")
        written = json.loads(text)
    except ValueError:  # also bytes that are not UTF-8
        raise _damaged(path, "not valid JSON") from None
    if not isinstance(written, dict):
        raise _damaged(path, "not a JSON object")
    try:
        return schema.model_validate_json(text), written
    except ValidationError as error:
        raise LenetError(f"{_one_line(error, path)}; {RETRAIN}") from None


def _stored_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Each array's shape in an ``.npz``, read from the ``.npy`` headers alone (nothing is allocated)."""
    shapes = {}
    with zipfile.ZipFile(weights) as archive:
        for entry in archive.infolist():
            with archive.open(entry) as stream:
                version = np.lib.format.read_magic(stream)
                header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = header(stream)
            if dtype.kind != "f" or math.prod(shape) * dtype.itemsize > entry.file_size:
                raise _damaged(weights, f"{entry.filename} is not a float array of the size it declares")
            shapes[entry.filename.removesuffix(".npy")] = shape
    return shapes


def read_model(directory: Path = MODELS):
    """``(model, config, preprocessing)`` from ``directory`` (the JSON as written); LenetError if any is damaged."""
    weights, config = directory / WEIGHTS, directory / CONFIG
    for path in (weights, config, directory / PREPROCESSING):
        if not path.is_file():  # an empty one is refused below, as not an .npz or not JSON
            raise LenetError(f"{path}: missing (run the train stage first)")
    if not zipfile.is_zipfile(weights):
        raise _damaged(weights, "not an .npz archive")
    _, preprocessing = _validated(directory / PREPROCESSING, Preprocessing)
    checked, architecture = _validated(config, ModelConfig)
    try:
        shapes = _stored_shapes(weights)
        for (key, index), name in SIZES.items():
            value = getattr(checked, key)
            if name in shapes and shapes[name][:1] != ((value if index is None else value[index]),):
                raise _damaged(config, f"{key} {json.dumps(value)} does not fit {WEIGHTS}, "
                                       f"whose {name} has shape {shapes[name]}")
        with open(weights, "rb") as weights_file:
            model, _ = nn.load_model(weights_file, io.StringIO(json.dumps(architecture)))
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, TypeError) as error:
        # An object array (numpy's advice: allow pickles) never gets here: _stored_shapes refuses it.
        raise _damaged(weights, f"corrupt or does not fit {config.name} ({first_line(error)})") from None
    broken = [name for name, value in model.named_parameters() if not np.isfinite(value).all()]
    if broken:
        raise _damaged(weights, f"NaN or infinite values in {', '.join(broken)}")
    return model, architecture, preprocessing
