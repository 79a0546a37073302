"""A trained model with its normalization: classify one decoded image, keep what it saw.

Shared by ``lenet predict`` and ``lenet serve``, so both run exactly the same code from
pixels to probabilities: :func:`lenet.preprocess.mnist_pixels`, the model's own
normalization (``preprocessing.json`` beside ``model.npz``) and :func:`nn.feature_maps`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import nn
from lenet.preprocess import mnist_pixels, model_input
from stages.common.errors import LenetError
from stages.common.model_files import PREPROCESSING, WEIGHTS, read_model
from stages.common.paths import MODELS

DEFAULT_MODEL = MODELS / WEIGHTS
MAPS = ("conv1", "conv2")


@dataclass(frozen=True)
class Prediction:
    """One image's classification.

    Attributes
    ----------
    digit : int
        The most probable class.
    probabilities : (10,) float64
        Summing to 1.
    pixels : (28, 28) uint8
        The digit as the network saw it before normalization.
    maps : dict of str to numpy.ndarray
        ``{"conv1": (c1, 28, 28), "conv2": (c2, 10, 10)}`` float32 conv outputs (before the
        activation), or empty when not asked for.
    """

    digit: int
    probabilities: np.ndarray
    pixels: np.ndarray
    maps: dict[str, np.ndarray]

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        """The ``k`` most probable ``(digit, probability)``, most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(d), float(self.probabilities[d])) for d in order]


class Classifier:
    """A loaded model ready to classify images; safe to share between threads.

    Attributes
    ----------
    model : nn.Sequential
        The LeNet-5, in eval mode.
    mean, std : float
        The training split's pixel statistics the inputs are normalized with.
    """

    def __init__(self, model: nn.Sequential, mean: float, std: float) -> None:
        self.model, self.mean, self.std = model.eval(), float(mean), float(std)
        self._lock = threading.Lock()  # layers cache their last forward pass: one at a time

    @classmethod
    def load(cls, path_npz: str | Path = DEFAULT_MODEL) -> "Classifier":
        """Load ``model.npz`` (+ ``model.json``) and the ``preprocessing.json`` beside it.

        Parameters
        ----------
        path_npz : str or Path, default DEFAULT_MODEL
            The ``model.npz``, or the directory holding them.

        Returns
        -------
        Classifier

        Raises
        ------
        LenetError
            One line naming the file at fault: missing, unreadable, or weights that do not
            fit the architecture its ``model.json`` describes.
        """
        path = Path(path_npz)
        directory = path if path.is_dir() else path.parent  # --model models/ or models/model.npz
        if not path.is_dir() and path.name != WEIGHTS:
            raise LenetError(f"{path}: expected the model directory or its {WEIGHTS}")
        if not directory.is_dir():
            raise LenetError(f"{directory}: not found (train a model with `dvc repro`, or pass --model)")
        model, config, stats = read_model(directory)
        if int(config.get("num_classes", 10)) != 10:
            raise LenetError(f"{path}: the model has {config['num_classes']} classes, expected 10 digits")
        preprocessing = directory / PREPROCESSING
        try:
            mean, std = float(stats["mean"]), float(stats["std"])
        except (ValueError, TypeError) as error:
            raise LenetError(f"{preprocessing}: expected numbers mean and std ({error})") from None
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise LenetError(f"{preprocessing}: need a finite mean and std > 0, got mean={mean}, std={std}")
        return cls(model, mean, std)

    def classify(self, pixels: np.ndarray, *, with_maps: bool = False) -> Prediction:
        """Preprocess one decoded image as MNIST was made and classify it.

        Parameters
        ----------
        pixels : uint8 (H, W), (H, W, 2), (H, W, 3) or (H, W, 4)
            Any size.
        with_maps : bool, default False
            Also return the conv1 and conv2 feature maps.

        Returns
        -------
        Prediction

        Raises
        ------
        lenet.preprocess.NoDigit
            The image is blank.
        """
        digit = mnist_pixels(pixels)
        x = model_input(digit, self.mean, self.std)
        with self._lock:
            logits, maps = nn.feature_maps(self.model, x, MAPS if with_maps else ())
        probabilities = nn.softmax(logits.astype(np.float64))[0]
        return Prediction(digit=int(probabilities.argmax()), probabilities=probabilities, pixels=digit,
                          maps={name: np.ascontiguousarray(m[0]) for name, m in maps.items()})
