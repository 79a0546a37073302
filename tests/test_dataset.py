"""A split survives the trip to Parquet exactly, deterministically, and bad files are refused."""

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages.common import dataset
from stages.common.dataset import Split, pixel_mean_std, read_split, write_split
from stages.common.model_files import normalize_pixels
from stages.common.errors import LenetError

INFO = {"split": "train", "sizes": {"train": 50}, "provenance": {"seed": 3, "limit": None}}
RUN = "ab" * 32


@pytest.fixture
def sample():
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=50)
    source_index = np.sort(rng.choice(60000, size=50, replace=False))
    return pixels, labels, source_index


def write(path, sample, mean=0.13, std=0.31, info=INFO, run_id=RUN):
    write_split(path, *sample, mean=mean, std=std, run_id=run_id, info=info)


# --- the transform -------------------------------------------------------------------------


def test_normalize_pixels_is_the_documented_formula_in_float32():
    pixels = (np.arange(784) % 256).astype(np.uint8).reshape(1, 28, 28)  # every value 0-255
    out = normalize_pixels(pixels, 0.1307, 0.3081)
    assert out.dtype == np.float32 and out.shape == (1, 1, 28, 28) and out.flags.c_contiguous
    reference = (pixels.astype(np.float64) / 255 - 0.1307) / 0.3081
    np.testing.assert_allclose(out[:, 0], reference, rtol=0, atol=1e-6)


def test_normalize_pixels_takes_both_layouts_and_leaves_its_input_alone(sample):
    pixels = sample[0]
    before = pixels.copy()
    flat, nchw = normalize_pixels(pixels, 0.2, 0.5), normalize_pixels(pixels[:, None], 0.2, 0.5)
    np.testing.assert_array_equal(flat, nchw)
    np.testing.assert_array_equal(pixels, before)


@pytest.mark.parametrize("bad", [np.zeros((2, 28, 28), np.float32), np.zeros((2, 32, 32), np.uint8),
                                 np.zeros((2, 3, 28, 28), np.uint8), np.zeros((784,), np.uint8)])
def test_normalize_pixels_refuses_other_dtypes_and_shapes(bad):
    with pytest.raises(ValueError):
        normalize_pixels(bad, 0.1, 0.3)


def test_pixel_mean_std_equals_numpy_in_float64(sample):
    mean, std = pixel_mean_std(sample[0])
    scaled = sample[0].astype(np.float64) / 255
    assert mean == pytest.approx(scaled.mean(), rel=1e-12)
    assert std == pytest.approx(scaled.std(), rel=1e-12)


# --- round trip ----------------------------------------------------------------------------


def test_round_trip_keeps_pixels_labels_indices_and_metadata(tmp_path, sample):
    pixels, labels, source_index = sample
    path = tmp_path / "train.parquet"
    write(path, sample)
    split = read_split(path)

    assert isinstance(split, Split) and len(split) == 50
    stored = pq.read_table(path).column("pixels").combine_chunks()
    assert stored.buffers()[1].to_pybytes()[: pixels.nbytes] == pixels.tobytes()  # bytes identical
    assert split.images.dtype == np.float32 and split.images.shape == (50, 1, 28, 28)
    np.testing.assert_array_equal(split.images, normalize_pixels(pixels, 0.13, 0.31))
    assert split.labels.dtype == np.int64 and split.source_index.dtype == np.int64
    np.testing.assert_array_equal(split.labels, labels)
    np.testing.assert_array_equal(split.source_index, source_index)
    facts = {**INFO, "mean": 0.13, "std": 0.31, "num_images": 50, "shape": [1, 28, 28],
             "stored_dtype": "uint8", "format_version": 2, "normalize_run": RUN}
    assert split.metadata == {**facts, "content_sha256": dataset.data_sha256(*sample, facts)}
    assert split.path == path


def test_stored_columns_have_the_documented_types(tmp_path, sample):
    write(tmp_path / "s.parquet", sample)
    schema = pq.read_schema(tmp_path / "s.parquet")
    assert [(f.name, f.type) for f in schema] == [
        ("label", pa.uint8()), ("source_index", pa.int32()), ("pixels", pa.binary(784))]


def test_same_input_writes_the_same_bytes(tmp_path, sample):
    write(tmp_path / "a.parquet", sample)
    write(tmp_path / "b.parquet", tuple(np.copy(a) for a in sample))
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.parquet", "b.parquet")]
    assert digest[0] == digest[1]
    write(tmp_path / "c.parquet", sample, mean=0.14)  # and the metadata is part of them
    assert hashlib.sha256((tmp_path / "c.parquet").read_bytes()).hexdigest() != digest[0]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, sample, monkeypatch):
    path = tmp_path / "s.parquet"
    write(path, sample)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(dataset.pq, "write_table", crash)
    with pytest.raises(OSError):
        write(path, sample, mean=0.5)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]


def test_write_refuses_pixels_that_are_not_28x28_bytes(tmp_path, sample):
    pixels, labels, source_index = sample  # the buffer goes into the file as is: nothing else would notice
    for bad in (pixels.astype(np.float32), pixels.reshape(-1, 14, 56)):
        with pytest.raises(ValueError, match="must be"):
            write_split(tmp_path / "s", bad, labels, source_index, mean=0, std=1, run_id=RUN, info={})
    assert not list(tmp_path.iterdir())


# --- bad files -----------------------------------------------------------------------------


def refused(path, *fragments):
    with pytest.raises(LenetError) as caught:
        read_split(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_missing_file_is_refused(tmp_path):
    refused(tmp_path / "nope.parquet", "not found")
    refused(tmp_path, "not found")  # a directory is not a split either


def test_a_file_that_is_not_parquet_is_refused(tmp_path):
    (tmp_path / "s.parquet").write_text("label,pixels\n1,0\n")
    refused(tmp_path / "s.parquet", "not a readable Parquet file")


def test_a_file_with_other_columns_is_refused(tmp_path):
    pq.write_table(pa.table({"label": pa.array([1], pa.int64()), "image": pa.array([b"x"])}), tmp_path / "s.parquet")
    refused(tmp_path / "s.parquet", "label: int64, image: binary", "expected label: uint8")


def table_with_metadata(sample, metadata):
    pixels, labels, source_index = sample
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(784), len(pixels), [None, pa.py_buffer(pixels)])
    schema = dataset.SCHEMA if metadata is None else dataset.SCHEMA.with_metadata({b"mnist_split": metadata})
    return pa.table([pa.array(labels.astype(np.uint8)), pa.array(source_index.astype(np.int32)), column],
                    schema=schema)


GOOD = {"mean": 0.1, "std": 0.3, "shape": [1, 28, 28], "stored_dtype": "uint8", "num_images": 50,
        "format_version": 2, "normalize_run": RUN}


@pytest.mark.parametrize("metadata, fragment", [
    (None, "no 'mnist_split' metadata"),
    ("{not json", "not valid JSON"),
    (json.dumps([1]), "has no content_sha256"),
    (json.dumps(GOOD), "has no content_sha256"),
    (json.dumps({**GOOD, "format_version": 1, "content_sha256": "0" * 64}),
     "format_version must be 2, got 1 (rerun the normalize stage)"),
    (json.dumps({**GOOD, "content_sha256": "0" * 64}), "content does not match its content_sha256"),
    # Any value changed after writing, even one a reader would accept, breaks the checksum:
    *[(json.dumps({**GOOD, key: value, "content_sha256": "CHECKSUM"}), "content does not match its content_sha256")
      for key, value in [("std", 0), ("mean", "x"), ("shape", [28, 28]), ("num_images", 49), ("normalize_run", "x")]],
])
def test_a_file_with_missing_or_wrong_metadata_is_refused(tmp_path, sample, metadata, fragment):
    if metadata and "CHECKSUM" in metadata:  # the checksum of the metadata as written, before the change
        metadata = metadata.replace("CHECKSUM", dataset.data_sha256(*sample, GOOD))
    pq.write_table(table_with_metadata(sample, metadata), tmp_path / "s.parquet")
    refused(tmp_path / "s.parquet", fragment)


def test_the_hand_built_table_is_accepted_with_good_metadata(tmp_path, sample):
    # Guards the test above: its tables fail only because of the metadata under test.
    good = {**GOOD, "content_sha256": dataset.data_sha256(*sample, GOOD)}
    pq.write_table(table_with_metadata(sample, json.dumps(good)), tmp_path / "s.parquet")
    assert len(read_split(tmp_path / "s.parquet")) == 50
