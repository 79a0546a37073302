"""Stage normalize: MNIST's IDX files -> train / val / test splits as Parquet.

``val_size`` training images are held out for validation, stratified by label (0: none, as
the tutorial trained on all 60,000). Every split records one mean and std, so all three are
normalized alike at load time (``normalize.scale``: the training split's, or the tutorial's
pixels / 256), one run id (:func:`run_id`), so train and evaluate refuse a mix of two runs,
and a checksum of its content (``stages.common.dataset``). The test set chooses nothing.
``limit`` keeps the first images of each source file, for small runs in tests; 0 keeps all
(0, not null: ``dvc exp run -S`` would write a null back as an empty value).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import typer

from stages.common.cli import run
from stages.common.dataset import data_sha256, pixel_mean_std, write_split
from stages.common.errors import LenetError
from stages.common.outputs import staged_outputs
from stages.common.params import load_params
from stages.common.paths import PARAMS, PREPARED, RAW
from stages.mnist.idx import NUM_CLASSES, LabelledImages, read_labelled_images

TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SPLIT_RULE = (
    "stratified by label: class k gets floor(val_size * n_k / n) validation images, and the "
    "remaining ones go one each to the classes with the largest remainders "
    "(val_size * n_k mod n), ties to the smaller label; the images held out from class k are "
    "its first ones in the order of numpy.random.default_rng(seed).permutation(n)"
)
SOURCE_INDEX_MEANING = "0-based index of the image in its source IDX files (images and labels)"
NORMALIZATION = {  # by normalize.scale, recorded in every split's provenance
    "standardize": "images = (pixels / 255 - mean) / std; mean, population std of the train split's pixels / 255",
    "unit256": "images = (pixels / 255 - mean) / std with mean 0, std 256/255: pixels / 256",
}
UNIT256_MEAN_STD = (0.0, 256 / 255)


def class_quotas(class_counts: np.ndarray, val_size: int) -> np.ndarray:
    """Validation images per class: proportional, by the largest-remainder rule.

    Parameters
    ----------
    class_counts : (K,) int
        Training images per class (n = their sum > val_size).
    val_size : int
        Images to hold out in total.

    Returns
    -------
    quotas : (K,) int64
        Summing to ``val_size``, each at most its class count. Exact integer arithmetic, so
        no float rounding can make the tie-break platform-dependent.
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    n = int(counts.sum())
    quotas, remainders = np.divmod(val_size * counts, n)
    missing = val_size - int(quotas.sum())  # <= classes with a non-zero remainder
    by_remainder = np.lexsort((np.arange(len(counts)), -remainders))  # largest first, then label
    quotas[by_remainder[:missing]] += 1
    return quotas


def stratified_split(labels: np.ndarray, val_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val), holding out :func:`class_quotas` of each label at random.

    Parameters
    ----------
    labels : (n,) int
        In 0–9.
    val_size : int
        0 <= val_size < n.
    rng : numpy.random.Generator
        The only source of randomness (one ``permutation(n)`` call).

    Returns
    -------
    train_index, val_index : int64 arrays
        Sorted, disjoint, together ``arange(n)``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    quotas = class_quotas(np.bincount(labels, minlength=NUM_CLASSES), val_size)
    shuffled = rng.permutation(n)
    by_class = shuffled[np.argsort(labels[shuffled], kind="stable")]  # classes in shuffled order
    class_of = labels[by_class]
    class_start = np.concatenate(([0], np.cumsum(np.bincount(class_of, minlength=NUM_CLASSES))[:-1]))
    rank_in_class = np.arange(n) - class_start[class_of]
    held_out = np.zeros(n, dtype=bool)
    held_out[by_class[rank_in_class < quotas[class_of]]] = True
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def _read(raw_dir: Path, files: tuple[str, str], limit: int | None) -> LabelledImages:
    data = read_labelled_images(*(raw_dir / name for name in files))
    return LabelledImages(images=data.images[:limit], labels=data.labels[:limit], sha256=data.sha256)


def prepare(raw_dir: Path, out_dir: Path, *, val_size: int, seed: int, limit: int | None,
            scale: str = "standardize") -> dict:
    """Read the IDX files in ``raw_dir``; write train/val/test.parquet to ``out_dir``.

    Parameters
    ----------
    raw_dir, out_dir : Path
    val_size : int
        Training images held out for validation.
    seed : int
        Seeds the stratified split.
    limit : int or None
        Keep the first ``limit`` images of each source file; None keeps all.
    scale : {"standardize", "unit256"}, default "standardize"
        The mean and std recorded: the training split's, or :data:`UNIT256_MEAN_STD`.

    Returns
    -------
    dict
        ``{"sizes": ..., "mean": ..., "std": ..., "run_id": ...}``, for the summary line.

    Raises
    ------
    LenetError
        If ``val_size`` is not less than the training images, or their pixels are all equal.
    """
    training, test = _read(raw_dir, TRAIN_FILES, limit), _read(raw_dir, TEST_FILES, limit)
    if val_size >= len(training.labels):
        raise LenetError(
            f"{PARAMS}: normalize.val_size must be less than the {len(training.labels)} training "
            f"images available (normalize.limit = {0 if limit is None else limit}), got {val_size}"
        )
    train_index, val_index = stratified_split(training.labels, val_size, np.random.default_rng(seed))
    mean, std = UNIT256_MEAN_STD if scale == "unit256" else pixel_mean_std(training.images[train_index])
    if std == 0:
        raise LenetError(f"{raw_dir / TRAIN_FILES[0]}: the training split's pixels are all equal, cannot standardize")

    sizes = {"train": len(train_index), "val": len(val_index), "test": len(test.labels)}
    provenance = {"source_index": SOURCE_INDEX_MEANING, "split_rule": SPLIT_RULE,
                  "normalization": NORMALIZATION[scale], "seed": seed, "val_size": val_size, "limit": limit}
    sha256 = {**training.sha256, **test.sha256}
    splits = {
        "train": (training, train_index, TRAIN_FILES),
        "val": (training, val_index, TRAIN_FILES),
        "test": (test, np.arange(len(test.labels)), TEST_FILES),
    }
    arrays = {name: (source.images[index], source.labels[index], index) for name, (source, index, _) in splits.items()}
    run = run_id(sha256, provenance, {name: data_sha256(*split) for name, split in arrays.items()})
    for name, (source, index, files) in splits.items():
        info = {"split": name, "sizes": sizes, "provenance": provenance, "sha256": sha256,
                "source_files": {"images": files[0], "labels": files[1]}}
        write_split(out_dir / f"{name}.parquet", *arrays[name], mean=mean, std=std, run_id=run, info=info)
    return {"sizes": sizes, "mean": mean, "std": std, "run_id": run}


def run_id(input_sha256: dict[str, str], provenance: dict, split_sha256: dict[str, str]) -> str:
    """The id every split of one normalize run records: SHA-256 of what the run read and wrote.

    Deterministic (same inputs, params and code, same id; outputs must be reproducible bit for
    bit), and it covers the splits' values, so splits of two runs that differ in anything
    (inputs, params or the code that splits them) never share it.
    """
    facts = {"inputs": input_sha256, "provenance": provenance, "splits": split_sha256}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0])


@app.command()
def main() -> None:
    """Write data/prepared/{train,val,test}.parquet from data/raw (params: normalize.*)."""
    params = load_params("normalize")
    with staged_outputs("normalize", [PREPARED], params) as staged:  # all three splits, or none
        summary = prepare(RAW, staged.path(PREPARED), val_size=params.normalize.val_size,
                          seed=params.normalize.seed, limit=params.normalize.limit or None,
                          scale=params.normalize.scale)
    sizes = ", ".join(f"{name} {size}" for name, size in summary["sizes"].items())
    print(f"normalize: {sizes}; train mean {summary['mean']:.4f}, std {summary['std']:.4f} -> {PREPARED}")


if __name__ == "__main__":
    run(app)
