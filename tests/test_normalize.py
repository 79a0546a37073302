"""The normalize stage: exact stratified hold-out, training-split statistics, the command itself."""

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


from stages.common.dataset import check_run, data_sha256, read_split
from stages.common.errors import LenetError
from stages.common.cli import run
from stages.normalize import TEST_FILES, TRAIN_FILES, app, class_quotas, prepare, run_id, stratified_split
from tests.params_file import set_params as set_dotted_params

REPO = Path(__file__).resolve().parents[1]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# --- class quotas and the split ------------------------------------------------------------


def test_quotas_on_mnist_follow_the_largest_remainder_rule():
    # 5000 * n_k / 60000 = n_k / 12: floors sum to 4994; the 6 extra go to the largest
    # remainders: 3 (.92), 1 and 4 (.83), 5 and 9 (.75), then 0 over 8 (both .58: smaller label).
    assert class_quotas(MNIST_TRAIN_COUNTS, 5000).tolist() == [494, 562, 496, 511, 487, 452, 493, 522, 487, 496]


@pytest.mark.parametrize("counts, val_size, expected", [
    ([3, 3, 3], 2, [1, 1, 0]),      # equal remainders: smaller labels first
    ([5, 1], 3, [3, 0]),            # 2.5 and 0.5: the tie goes to label 0
    ([0, 4, 0, 4], 4, [0, 2, 0, 2]),
    ([10, 0, 1], 10, [9, 0, 1]),    # 9.09 and 0.91: the extra one empties class 2's train part
])
def test_quotas_small_cases(counts, val_size, expected):
    assert class_quotas(counts, val_size).tolist() == expected


def test_quotas_always_sum_to_val_size_and_fit_each_class():
    rng = np.random.default_rng(1)
    for _ in range(200):
        counts = rng.integers(0, 30, size=10)
        counts[rng.integers(10)] += 1
        val_size = int(rng.integers(1, counts.sum()))
        quotas = class_quotas(counts, val_size)
        assert quotas.sum() == val_size
        assert np.all(quotas <= counts) and np.all(quotas >= 0)
        assert np.all(np.abs(quotas - val_size * counts / counts.sum()) < 1)


def slow_stratified_split(labels, val_size, rng):
    """The documented rule, one image at a time: walk a permutation, hold out while quota lasts."""
    quotas = class_quotas(np.bincount(labels, minlength=10), val_size)
    held_out = []
    for i in rng.permutation(len(labels)):
        if quotas[labels[i]] > 0:
            quotas[labels[i]] -= 1
            held_out.append(int(i))
    val = sorted(held_out)
    return [i for i in range(len(labels)) if i not in set(val)], val


def test_split_equals_the_slow_reference():
    labels = np.random.default_rng(2).integers(0, 10, size=700)
    train, val = stratified_split(labels, 123, np.random.default_rng(5))
    ref_train, ref_val = slow_stratified_split(labels, 123, np.random.default_rng(5))
    assert val.tolist() == ref_val and train.tolist() == ref_train


def test_split_holds_out_exactly_the_quotas_disjoint_and_complete():
    labels = np.random.default_rng(3).integers(0, 10, size=60000)
    train, val = stratified_split(labels, 5000, np.random.default_rng(0))
    assert np.bincount(labels[val], minlength=10).tolist() == class_quotas(np.bincount(labels), 5000).tolist()
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(60000))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)


def test_split_depends_only_on_the_seed():
    labels = np.random.default_rng(4).integers(0, 10, size=1000)
    first = stratified_split(labels, 100, np.random.default_rng(11))[1]
    again = stratified_split(labels, 100, np.random.default_rng(11))[1]
    other = stratified_split(labels, 100, np.random.default_rng(12))[1]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


# --- prepare() on synthetic IDX files ------------------------------------------------------


def idx(magic: int, array: np.ndarray) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def write_raw(raw_dir: Path, n_train=300, n_test=80, seed=0):
    """Synthetic IDX files: random images whose brightness depends on the label."""
    rng = np.random.default_rng(seed)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for (images_name, labels_name), n in ((TRAIN_FILES, n_train), (TEST_FILES, n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = (rng.random((n, 28, 28)) * (labels[:, None, None] * 25 + 25)).astype(np.uint8)
        (raw_dir / images_name).write_bytes(idx(0x803, images))
        (raw_dir / labels_name).write_bytes(idx(0x801, labels))


def raw_arrays(raw_dir: Path, names):
    images = np.frombuffer((raw_dir / names[0]).read_bytes()[16:], np.uint8).reshape(-1, 28, 28)
    return images, np.frombuffer((raw_dir / names[1]).read_bytes()[8:], np.uint8)


def test_prepare_writes_three_consistent_splits(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    write_raw(raw)
    prepare(raw, out, val_size=40, seed=0, limit=None)
    train, val, test = (read_split(out / f"{name}.parquet") for name in ("train", "val", "test"))
    train_images, train_labels = raw_arrays(raw, TRAIN_FILES)

    # Standardized with the training split's own statistics ...
    assert float(train.images.astype(np.float64).mean()) == pytest.approx(0, abs=1e-6)
    assert float(train.images.astype(np.float64).std()) == pytest.approx(1, abs=1e-6)
    # ... which every split records, and which come from the train part only.
    scaled = train_images[train.source_index].astype(np.float64) / 255
    for split in (train, val, test):
        assert split.metadata["mean"] == pytest.approx(scaled.mean(), rel=1e-12)
        assert split.metadata["std"] == pytest.approx(scaled.std(), rel=1e-12)
        assert split.metadata["sizes"] == {"train": 260, "val": 40, "test": 80}
    # source_index points back at the very image and label in the IDX file.
    for split, (images, labels) in ((val, (train_images, train_labels)), (test, raw_arrays(raw, TEST_FILES))):
        recovered = split.images * split.metadata["std"] + split.metadata["mean"]
        np.testing.assert_allclose(recovered[:, 0] * 255, images[split.source_index], atol=1e-3)
        np.testing.assert_array_equal(split.labels, labels[split.source_index])
    np.testing.assert_array_equal(test.source_index, np.arange(80))
    np.testing.assert_array_equal(np.union1d(train.source_index, val.source_index), np.arange(300))
    # Provenance: the checksums of the files read, and the params.
    assert test.metadata["sha256"][TEST_FILES[0]] == hashlib.sha256((raw / TEST_FILES[0]).read_bytes()).hexdigest()
    assert val.metadata["split"] == "val" and val.metadata["source_files"]["images"] == TRAIN_FILES[0]
    assert {k: val.metadata["provenance"][k] for k in ("seed", "val_size", "limit")} == \
        {"seed": 0, "val_size": 40, "limit": None}


def test_limit_keeps_the_first_images_of_each_file(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    write_raw(raw)
    prepare(raw, out, val_size=10, seed=0, limit=50)
    train, val, test = (read_split(out / f"{name}.parquet") for name in ("train", "val", "test"))
    np.testing.assert_array_equal(np.union1d(train.source_index, val.source_index), np.arange(50))
    np.testing.assert_array_equal(test.source_index, np.arange(50))


def test_the_three_splits_share_one_run_id_made_of_inputs_params_and_values(tmp_path):
    write_raw(tmp_path / "raw")
    summary = prepare(tmp_path / "raw", tmp_path / "a", val_size=40, seed=3, limit=None)
    splits = {name: read_split(tmp_path / "a" / f"{name}.parquet") for name in ("train", "val", "test")}
    train = splits["train"]
    for split in splits.values():
        check_run(split, train.metadata["normalize_run"], train.path, rerun="normalize")
    stored = {name: data_sha256(np.rint((s.images[:, 0] * s.metadata["std"] + s.metadata["mean"]) * 255)
                                .astype(np.uint8), s.labels, s.source_index) for name, s in splits.items()}
    assert summary["run_id"] == train.metadata["normalize_run"] == run_id(
        train.metadata["sha256"], train.metadata["provenance"], stored)
    prepare(tmp_path / "raw", tmp_path / "b", val_size=40, seed=4, limit=None)  # other params: another run
    assert read_split(tmp_path / "b" / "test.parquet").metadata["normalize_run"] != summary["run_id"]


def test_prepare_is_deterministic_to_the_byte(tmp_path):
    write_raw(tmp_path / "raw")
    for out in ("a", "b"):
        prepare(tmp_path / "raw", tmp_path / out, val_size=40, seed=3, limit=None)
    for name in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == (tmp_path / "b" / f"{name}.parquet").read_bytes()


def test_val_size_0_trains_on_every_image_and_writes_an_empty_val_split(tmp_path):
    write_raw(tmp_path / "raw")
    summary = prepare(tmp_path / "raw", tmp_path / "out", val_size=0, seed=0, limit=None)
    train, val = (read_split(tmp_path / "out" / f"{name}.parquet") for name in ("train", "val"))
    assert summary["sizes"] == {"train": 300, "val": 0, "test": 80}
    np.testing.assert_array_equal(train.source_index, np.arange(300))
    assert len(val) == 0 and val.images.shape == (0, 1, 28, 28)
    check_run(val, train.metadata["normalize_run"], train.path, rerun="normalize")


def test_unit256_records_mean_0_and_std_256_over_255_so_inputs_are_pixels_over_256(tmp_path):
    raw = tmp_path / "raw"
    write_raw(raw)
    prepare(raw, tmp_path / "out", val_size=0, seed=0, limit=None, scale="unit256")
    train = read_split(tmp_path / "out" / "train.parquet")
    images, _ = raw_arrays(raw, TRAIN_FILES)
    assert (train.metadata["mean"], train.metadata["std"]) == (0.0, 256 / 255)
    # The tutorial's inputs, bit for bit: uint8 / 256 is exact in float32 (and in its float16).
    np.testing.assert_array_equal(train.images[:, 0], images.astype(np.float32) / 256)
    assert "pixels / 256" in train.metadata["provenance"]["normalization"]


def test_val_size_not_below_the_training_images_is_refused(tmp_path):
    write_raw(tmp_path / "raw")
    with pytest.raises(LenetError, match=r"normalize\.val_size .* 50 training .*normalize\.limit = 50\), got 50$"):
        prepare(tmp_path / "raw", tmp_path / "out", val_size=50, seed=0, limit=50)
    assert not (tmp_path / "out").exists()


# --- the command -----------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A copy of the repo's params.yaml and dvc.yaml beside synthetic data/raw; cwd set to it."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    write_raw(tmp_path / "data" / "raw")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def set_params(root: Path, **values):
    set_dotted_params(root, {f"normalize.{key}": value for key, value in values.items()})


def test_command_runs_end_to_end(workdir):
    set_params(workdir, val_size=30, limit=200)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "stages.normalize"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "train 170, val 30, test 80" in done.stdout
    assert sorted(p.name for p in (workdir / "data" / "prepared").iterdir()) == \
        ["test.parquet", "train.parquet", "val.parquet"]
    assert read_split(workdir / "data" / "prepared" / "val.parquet").metadata["provenance"]["limit"] == 200


@pytest.mark.parametrize("values, message", [
    ({"val_size": -5}, "params.yaml: normalize.val_size must be greater than or equal to 0, got -5"),
    ({"val_size": 1.5}, "params.yaml: normalize.val_size must be a valid integer, got 1.5"),
    ({"val_size": 300}, "params.yaml: normalize.val_size must be less than the 300 training images "
                        "available (normalize.limit = 0), got 300"),
    ({"limit": -1}, "params.yaml: normalize.limit must be greater than or equal to 0, got -1"),
    ({"limit": None}, "params.yaml: normalize.limit must be a valid integer, got None"),
    ({"seed": -1}, "params.yaml: normalize.seed must be greater than or equal to 0, got -1"),
    ({"scale": "unit255"}, "params.yaml: normalize.scale must be 'standardize' or 'unit256', got 'unit255'"),
])
def test_invalid_params_end_in_one_line_naming_the_key(workdir, monkeypatch, capsys, values, message):
    set_params(workdir, **values)
    monkeypatch.setattr(sys, "argv", ["normalize"])
    with pytest.raises(SystemExit) as exit_:
        run(app)
    assert exit_.value.code == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (workdir / "data" / "prepared").exists()


def test_missing_raw_file_ends_in_one_line_naming_it(workdir, monkeypatch, capsys):
    (workdir / "data" / "raw" / TEST_FILES[1]).unlink()
    monkeypatch.setattr(sys, "argv", ["normalize"])
    with pytest.raises(SystemExit):
        run(app)
    err = capsys.readouterr().err
    assert err.startswith(f"error: data/raw/{TEST_FILES[1]}: file not found") and err.count("\n") == 1


# --- real data -------------------------------------------------------------------------------


def test_real_split_holds_out_the_mnist_quotas(mnist_mirror):
    labels = np.frombuffer(gzip.decompress((mnist_mirror / "train-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    train, val = stratified_split(labels, 5000, np.random.default_rng(0))
    assert np.bincount(labels[val]).tolist() == [494, 562, 496, 511, 487, 452, 493, 522, 487, 496]
    assert len(train) == 55000
