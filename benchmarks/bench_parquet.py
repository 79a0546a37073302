"""Measure Parquet layouts for a split of MNIST: size on disk and time to load it normalized.

Prints one JSON line per (layout, compression): bytes on disk, and the median over
``--repeats`` of the time to read the file and return (N, 1, 28, 28) float32 normalized
images (the work ``read_split`` must do). The last lines time ``stages.common.dataset``
itself (``write_split`` / ``read_split``), i.e. the layout the pipeline uses.

    python benchmarks/bench_parquet.py [--raw-dir data/raw] [--images 55000] [--repeats 5]

The images are the first ``--images`` of the training file (data/raw, else the gzip'd
mirror in ../shared/mnist); the page cache is warm, as it is when training reads its data.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.common.dataset import pixel_mean_std, read_split, write_split
from stages.common.model_files import normalize_pixels
from stages.common.idx import parse_images, parse_labels

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "mnist"
PIXELS = 28 * 28


def load_training_file(raw_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    if all((raw_dir / n).exists() for n in names):
        blobs = [(raw_dir / n).read_bytes() for n in names]
    else:
        blobs = [gzip.decompress((SHARED_MNIST / f"{n}.gz").read_bytes()) for n in names]
    return parse_images(blobs[0], names[0]), parse_labels(blobs[1], names[1])


# --- candidate layouts: (build the pixel column(s), turn a read table back into images) ------


def binary_uint8(images):
    return {"pixels": pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(PIXELS), len(images), [None, pa.py_buffer(np.ascontiguousarray(images))])}


def from_binary_uint8(table, mean, std):
    column = table.column("pixels").combine_chunks()
    raw = np.frombuffer(column.buffers()[1], np.uint8, count=len(column) * PIXELS,
                        offset=column.offset * PIXELS)
    return normalize_pixels(raw.reshape(-1, 28, 28), mean, std)


def list_uint8(images):
    values = pa.array(np.ascontiguousarray(images).reshape(-1))
    return {"pixels": pa.FixedSizeListArray.from_arrays(values, PIXELS)}


def from_list_uint8(table, mean, std):
    column = table.column("pixels").combine_chunks()
    raw = column.flatten().to_numpy(zero_copy_only=False)
    return normalize_pixels(raw.reshape(-1, 28, 28), mean, std)


def columns_uint8(images):
    flat = np.ascontiguousarray(images).reshape(len(images), PIXELS)
    return {f"p{i}": pa.array(flat[:, i]) for i in range(PIXELS)}


def from_columns_uint8(table, mean, std):
    raw = np.stack([table.column(f"p{i}").to_numpy() for i in range(PIXELS)], axis=1)
    return normalize_pixels(raw.reshape(-1, 28, 28), mean, std)


def binary_float32(images, mean, std):
    normalized = np.ascontiguousarray(normalize_pixels(images, mean, std))
    return {"pixels": pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(PIXELS * 4), len(images), [None, pa.py_buffer(normalized)])}


def from_binary_float32(table, mean, std):
    column = table.column("pixels").combine_chunks()
    return np.frombuffer(column.buffers()[1], np.float32, count=len(column) * PIXELS,
                         offset=column.offset * PIXELS * 4).reshape(-1, 1, 28, 28)


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()``: robust to the other jobs sharing this machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", type=Path, default=Path("data/raw"))
    parser.add_argument("--images", type=int, default=55000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    images, labels = load_training_file(args.raw_dir)
    images, labels = images[: args.images], labels[: args.images]
    mean, std = pixel_mean_std(images)
    expected = normalize_pixels(images, mean, std)
    label_col = {"label": pa.array(labels)}

    layouts = [
        ("fixed_size_binary(784) uint8", lambda: binary_uint8(images), from_binary_uint8),
        ("fixed_size_list<uint8>[784]", lambda: list_uint8(images), from_list_uint8),
        ("784 uint8 columns", lambda: columns_uint8(images), from_columns_uint8),
        ("fixed_size_binary(3136) float32 normalized",
         lambda: binary_float32(images, mean, std), from_binary_float32),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "split.parquet"
        for layout, build, load in layouts:
            table = pa.table({**label_col, **build()})
            for compression in ("none", "snappy", "lz4", "zstd"):
                if layout == "784 uint8 columns" and compression != "snappy":
                    continue  # slow to write and read; one point is enough to rule it out
                write_seconds = median_time(lambda: pq.write_table(
                    table, path, compression=compression, use_dictionary=["label"]), 1)
                loaded = load(pq.read_table(path), mean, std)
                assert np.array_equal(loaded, expected), layout
                read_seconds = median_time(lambda: load(pq.read_table(path), mean, std), args.repeats)
                print(json.dumps({"layout": layout, "compression": compression, "images": len(images),
                                  "bytes": path.stat().st_size, "write_s": round(write_seconds, 3),
                                  "load_normalized_s": round(read_seconds, 3)}), flush=True)

        # The transform alone: what the load time above spends outside Parquet.
        print(json.dumps({"step": "normalize_pixels only", "images": len(images),
                          "seconds": round(median_time(lambda: normalize_pixels(images, mean, std),
                                                       args.repeats), 3)}), flush=True)

        # The pipeline's own writer and reader.
        info = {"split": "bench"}
        write_seconds = median_time(lambda: write_split(
            path, images, labels, np.arange(len(images)), mean=mean, std=std, run_id="0" * 64, info=info), 1)
        read_seconds = median_time(lambda: read_split(path), args.repeats)
        print(json.dumps({"layout": "stages.common.dataset (write_split/read_split)",
                          "images": len(images), "bytes": path.stat().st_size,
                          "write_s": round(write_seconds, 3), "read_split_s": round(read_seconds, 3)}),
              flush=True)


if __name__ == "__main__":
    main()
