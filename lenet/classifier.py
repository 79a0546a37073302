"""A trained model with its normalization: classify one decoded image, keep what it saw.

Shared by ``lenet predict`` and ``lenet serve``, so both run exactly the same code from
pixels to probabilities: :func:`lenet.preprocess.mnist_pixels`, the model's own
normalization (``preprocessing.json`` beside ``model.npz``) and :func:`nn.feature_maps`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import nn
from lenet.preprocess import BOX, marks_side_by_side, mnist_pixels, model_input
from stages.common.errors import LenetError
from stages.common.model_files import MODELS, RETRAIN, WEIGHTS, read_model

DEFAULT_MODEL = MODELS / WEIGHTS
MAPS = ("conv1", "conv2")
# Below this top probability an answer is flagged unsure: on MNIST's test set that flags 0.8%
# of the digits and 29 of the pipeline model's 50 errors.
UNSURE_BELOW = 0.8


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
    unsure : str or None
        Why the answer should not be trusted (a tiny image, a low top probability, several
        digit-sized marks side by side), or None.
    """

    digit: int
    probabilities: np.ndarray
    pixels: np.ndarray
    maps: dict[str, np.ndarray]
    unsure: str | None = None

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
    source : str
        Where the model came from, for messages.
    """

    def __init__(self, model: nn.Sequential, mean: float, std: float, source: str = "the model") -> None:
        self.model, self.mean, self.std, self.source = model.eval(), float(mean), float(std), source
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
            One line naming the file at fault: missing, unreadable, a value out of bounds,
            or weights that do not fit the architecture its ``model.json`` describes.
        """
        path = Path(path_npz)
        directory = path if path.is_dir() else path.parent  # --model models/ or models/model.npz
        if not path.is_dir() and path.name != WEIGHTS:
            raise LenetError(f"{path}: expected the model directory or its {WEIGHTS}")
        if not directory.is_dir():
            raise LenetError(f"{directory}: not found (train a model with `dvc repro`, or pass --model)")
        model, config, stats = read_model(directory)  # every value checked there
        if config.get("num_classes", 10) != 10:
            raise LenetError(f"{path}: the model has {config['num_classes']} classes, expected 10 digits")
        return cls(model, stats["mean"], stats["std"], source=str(directory))

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
        LenetError
            The model answers NaN (weights so large that the sums overflow): it is broken.
        """
        digit = mnist_pixels(pixels)
        x = model_input(digit, self.mean, self.std)
        # Overflow in a broken model is checked below, as one line, not warned about on the way.
        with self._lock, np.errstate(over="ignore", invalid="ignore"):
            logits, maps = nn.feature_maps(self.model, x, MAPS if with_maps else ())
            probabilities = nn.softmax(logits.astype(np.float64))[0]
        if not np.isfinite(probabilities).all():
            raise LenetError(f"{self.source}: the model's probabilities are NaN; it is broken ({RETRAIN})")
        doubts, marks = [], marks_side_by_side(digit)
        if max(pixels.shape[:2]) < BOX // 2:  # blown up over 2x to fill the box: no strokes left to read
            doubts.append(f"the image is only {pixels.shape[1]}x{pixels.shape[0]} pixels")
        if probabilities.max() < UNSURE_BELOW:
            doubts.append(f"top probability {probabilities.max():.0%} is below {UNSURE_BELOW:.0%}")
        if marks > 1:
            doubts.append(f"{marks} digit-sized marks side by side")
        return Prediction(digit=int(probabilities.argmax()), probabilities=probabilities, pixels=digit,
                          maps={name: np.ascontiguousarray(m[0]) for name, m in maps.items()},
                          unsure="; ".join(doubts) or None)
