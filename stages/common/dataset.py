"""A prepared MNIST split on disk: the one place that knows its storage format.

One deterministic Parquet file per split (:data:`SCHEMA`, the raw uint8 pixels, zstd level 1;
benchmarks/README.md says why this layout). The schema metadata key ``mnist_split`` holds
JSON: the training split's ``mean`` and ``std``, the ``normalize_run`` its three splits share,
and ``content_sha256`` over every value a reader gets, which :func:`read_split` recomputes,
since Parquet checks no checksum: a file loads exactly as written or is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.common.errors import LenetError, first_line
from stages.common.model_files import IMAGE_SHAPE, normalize_pixels
from stages.common.outputs import atomic_write

PIXELS_PER_IMAGE = 28 * 28
METADATA_KEY = b"mnist_split"
FORMAT_VERSION = 2  # 2: normalize_run and content_sha256
RUN_KEY, CHECKSUM_KEY = "normalize_run", "content_sha256"
SCHEMA = pa.schema([
    ("label", pa.uint8()),
    ("source_index", pa.int32()),  # the image's 0-based index in its IDX file
    ("pixels", pa.binary(PIXELS_PER_IMAGE)),
])
_WRITE_OPTIONS = dict(
    compression="zstd",
    compression_level=1,
    use_dictionary=False,
    # min/max of 784-byte pixel strings help no reader; keep the footer small.
    write_statistics=["label", "source_index"],
)


def pixel_mean_std(pixels: np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation of ``pixels / 255`` (uint8, any shape, not empty), exactly.

    A 256-bin histogram makes the result exact in float64 whatever N is, and chunks keep
    memory flat (a float64 copy of 55,000 images would be 345 MB).
    """
    flat = np.asarray(pixels).reshape(-1)
    counts = np.zeros(256, dtype=np.int64)
    chunk = 1 << 22
    for start in range(0, flat.size, chunk):
        counts += np.bincount(flat[start:start + chunk], minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    mean = float(counts @ values) / flat.size
    std = math.sqrt(float(counts @ (values - mean) ** 2) / flat.size)
    return mean, std


@dataclass(frozen=True)
class Split:
    """One prepared split, loaded and normalized.

    Attributes
    ----------
    images : (N, 1, 28, 28) float32
        Normalized with the training split's mean and std.
    labels : (N,) int64
        0–9.
    source_index : (N,) int64
        Each image's 0-based index in its source IDX file.
    metadata : dict
        The file's recorded facts: mean, std, shape, stored_dtype, split, sizes, ...
    path : Path
        The file it was read from (for messages).
    """

    images: np.ndarray
    labels: np.ndarray
    source_index: np.ndarray
    metadata: dict[str, Any]
    path: Path

    def __len__(self) -> int:
        return len(self.labels)


def data_sha256(pixels: np.ndarray, labels: np.ndarray, source_index: np.ndarray,
                metadata: dict[str, Any] | None = None) -> str:
    """SHA-256 (hex) of a split's values as stored (the arrays :func:`write_split` takes).

    With ``metadata`` (all but its ``content_sha256``, as key-sorted JSON) hashed first: the
    split's ``content_sha256``. Each part is hashed after its length, so no two lists of parts
    collide.
    """
    stored = [np.ascontiguousarray(labels, dtype=np.uint8), np.ascontiguousarray(source_index, dtype="<i4"),
              np.ascontiguousarray(pixels, dtype=np.uint8)]
    if metadata is not None:
        stored.insert(0, json.dumps({k: v for k, v in metadata.items() if k != CHECKSUM_KEY}, sort_keys=True).encode())
    digest = hashlib.sha256()
    for part in stored:
        view = memoryview(part).cast("B") if len(part) else b""  # an empty split (val_size 0) has no bytes
        digest.update(len(view).to_bytes(8, "little"))
        digest.update(view)
    return digest.hexdigest()


def write_split(path: str | Path, pixels: np.ndarray, labels: np.ndarray, source_index: np.ndarray,
                *, mean: float, std: float, run_id: str, info: dict[str, Any]) -> None:
    """Atomically write one split to ``path`` as deterministic Parquet.

    Parameters
    ----------
    path : str or Path
    pixels : (N, 28, 28) uint8
        The raw images (stored as is).
    labels : (N,) integers
        In 0–9.
    source_index : (N,) integers
        In [0, 2**31), each image's index in its source file.
    mean, std : float
        Of the training split's pixels / 255; what :func:`read_split` normalizes with.
    run_id : str
        The id of the normalize run writing this split (64 hex digits), the same for all
        its splits, so a reader can tell splits of different runs apart.
    info : dict
        JSON-serializable facts to record (split name, sizes, checksums, provenance).
    """
    pixels = np.ascontiguousarray(pixels)
    n = len(pixels)
    if pixels.dtype != np.uint8 or pixels.shape != (n, *IMAGE_SHAPE[1:]):  # stored as one raw buffer, unchecked
        raise ValueError(f"pixels must be (N, 28, 28) uint8, got {pixels.shape} {pixels.dtype}")
    metadata = {**info, "mean": float(mean), "std": float(std), "num_images": n,
                "shape": list(IMAGE_SHAPE), "stored_dtype": "uint8", "format_version": FORMAT_VERSION,
                RUN_KEY: run_id}
    metadata[CHECKSUM_KEY] = data_sha256(pixels, labels, source_index, metadata)
    pixel_column = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(PIXELS_PER_IMAGE), n, [None, pa.py_buffer(pixels)])
    table = pa.table(
        [pa.array(np.asarray(labels, np.uint8)), pa.array(np.asarray(source_index, np.int32)), pixel_column],
        schema=SCHEMA.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)}),
    )
    with atomic_write(path) as handle:
        pq.write_table(table, handle, **_WRITE_OPTIONS)


def _read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise LenetError(f"{path}: file not found (expected a split written by stages.normalize)")
    try:
        with pq.ParquetFile(path) as parquet:
            return parquet.read()
    except (pa.ArrowException, OSError, ValueError) as error:  # ValueError: e.g. a column name not UTF-8
        raise LenetError(f"{path}: not a readable Parquet file ({first_line(error)})") from None


def _read_metadata(path: Path, table: pa.Table) -> dict[str, Any]:
    """The split's metadata, as far as it can be read; :func:`read_split` then checks its checksum.

    ``content_sha256`` covers every value: once it matches, the metadata is exactly what
    the normalize stage wrote, so no value needs a check of its own.
    """
    name = METADATA_KEY.decode()
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise LenetError(f"{path}: no {name!r} metadata (not written by stages.normalize)")
    try:
        metadata = json.loads(raw)
    except ValueError:
        raise LenetError(f"{path}: {name!r} metadata is not valid JSON") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get(CHECKSUM_KEY), str):
        raise LenetError(f"{path}: {name!r} metadata has no {CHECKSUM_KEY} (not written by stages.normalize)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise LenetError(f"{path}: format_version must be {FORMAT_VERSION}, got {metadata.get('format_version')!r} "
                         "(rerun the normalize stage)")
    return metadata


def read_split(path: str | Path) -> Split:
    """Load the split at ``path``, normalized for the model.

    Raises
    ------
    LenetError
        Naming the file if it is missing, not Parquet, or has other columns, types or
        metadata than :func:`write_split` writes, or if its content does not match its
        ``content_sha256`` (a corrupt file).
    """
    path = Path(path)
    table = _read_table(path)
    found, expected = (", ".join(f"{f.name}: {f.type}" for f in schema) for schema in (table.schema, SCHEMA))
    if found != expected:
        raise LenetError(f"{path}: columns {found}; expected {expected}")
    nulls = [name for name in SCHEMA.names if table.column(name).null_count]
    if nulls:
        raise LenetError(f"{path}: null values in column(s) {', '.join(nulls)}, expected none")
    metadata = _read_metadata(path, table)

    pixel_column = table.column("pixels").combine_chunks()
    data = pixel_column.buffers()[1]  # the column's values, back to back: zero-copy view
    pixels = np.frombuffer(data if data is not None else b"", dtype=np.uint8,
                           count=len(pixel_column) * PIXELS_PER_IMAGE,
                           offset=pixel_column.offset * PIXELS_PER_IMAGE)
    stored_labels = table.column("label").to_numpy()
    stored_index = table.column("source_index").to_numpy()
    if data_sha256(pixels, stored_labels, stored_index, metadata) != metadata[CHECKSUM_KEY]:
        raise LenetError(f"{path}: content does not match its {CHECKSUM_KEY} (the file is corrupt; "
                         "rerun the normalize stage)")
    images = normalize_pixels(pixels.reshape(-1, *IMAGE_SHAPE[1:]), metadata["mean"], metadata["std"])
    return Split(images, stored_labels.astype(np.int64), stored_index.astype(np.int64), metadata, path)


def check_run(split: Split, run_id: Any, recorded_in: str | Path, rerun: str) -> None:
    """Refuse ``split`` unless it comes from normalize run ``run_id``, as ``recorded_in`` records.

    A mix of two runs' splits (normalize killed between two files), or a split beside a model
    trained on another run's, would train or score on data that do not belong together.
    """
    if run_id != split.metadata[RUN_KEY]:
        recorded = f"run {run_id[:12]}..." if isinstance(run_id, str) else f"no {RUN_KEY}"
        raise LenetError(f"{split.path} comes from normalize run {split.metadata[RUN_KEY][:12]}..., but "
                         f"{recorded_in} records {recorded}; rerun the {rerun} stage")
