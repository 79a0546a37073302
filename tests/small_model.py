"""A small LeNet-5 trained in-process on a few thousand MNIST images from the local mirror.

Tests of ``lenet predict`` and ``lenet serve`` need a model that classifies clear digits,
but must not depend on a full ``dvc repro``. :func:`train_small_model` writes one the way
the train stage does (``model.npz`` + ``model.json`` + ``preprocessing.json``) in 5-20 s
of one core (96% test accuracy). ``python -m tests.small_model DIR`` writes one for development.
"""

from __future__ import annotations

import functools
import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

import nn
from nn.training import EarlyStopping, Trainer
from stages.common.dataset import pixel_mean_std
from stages.common.model_files import normalize_pixels
from stages.common.idx import parse_images, parse_labels
from stages.common.model_files import write_model
from tests.mnist_mirror import MIRROR, NO_MIRROR


def read_mnist(which: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` images ``(N, 28, 28) uint8`` and labels ``(N,)`` of ``train`` or ``t10k``."""
    base = MIRROR
    if base is None:
        raise FileNotFoundError(NO_MIRROR)
    images_path = base / f"{which}-images-idx3-ubyte.gz"
    labels_path = base / f"{which}-labels-idx1-ubyte.gz"
    images = parse_images(gzip.decompress(images_path.read_bytes()), str(images_path))
    labels = parse_labels(gzip.decompress(labels_path.read_bytes()), str(labels_path))
    return images[:limit], labels[:limit]


def train_small_model(out_dir: str | Path, *, images: int = 6000, epochs: int = 3, seed: int = 0) -> Path:
    """Train LeNet-5 (the pipeline's architecture) on the first ``images`` training images.

    Light augmentation (shifts, rotations, scaling, as in ``params.yaml``) keeps the model
    from depending on MNIST's exact placement, as the pipeline's model does not.

    Returns
    -------
    The path of ``model.npz``; ``model.json`` and ``preprocessing.json`` are beside it.
    """
    out_dir = Path(out_dir)
    pixels, labels = read_mnist("train", images)
    mean, std = pixel_mean_std(pixels)
    x, y = normalize_pixels(pixels, mean, std), labels.astype(np.int64)
    rng = np.random.default_rng(seed)
    config = {"channels": [8, 24], "hidden": [120, 84], "activation": "relu", "pool": "max"}
    model = nn.lenet5(**config, rng=rng)
    optimizer = nn.make_optimizer("sgd", dict(model.named_parameters()), lr=0.02, momentum=0.9,
                                  nesterov=True, weight_decay=5e-4)
    lr_at = functools.partial(nn.learning_rate, base_lr=0.02, schedule="cosine", total_epochs=epochs,
                              warmup_epochs=0, step_size=1, gamma=1.0, min_lr=0.0)
    augment = functools.partial(nn.augment, max_shift=2.0, max_rotation=10.0, max_scale=0.1,
                                fill=(0.0 - mean) / std)
    trainer = Trainer(model=model, optimizer=optimizer, lr_at=lr_at, rng=rng, batch_size=32,
                                  early_stopping=EarlyStopping(), augment=augment)
    trainer.fit((x, y), (x[:500], y[:500]), epochs=epochs)
    write_model(out_dir, model, config, {"mean": mean, "std": std})
    return out_dir / "model.npz"


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, mnist_mirror) -> Path:  # (read_mnist reads from it)
    """``model.npz`` of a small LeNet-5 trained once per test session (skipped without MNIST).

    Import it into a test module (``from tests.small_model import small_model``) to use it.
    """
    return train_small_model(tmp_path_factory.mktemp("small_model"))


if __name__ == "__main__":
    print(train_small_model(sys.argv[1] if len(sys.argv) > 1 else "models"))
