"""IDX parsing: every malformed file is refused with one line; the real files give MNIST's facts."""

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from stages.common.dataset import pixel_mean_std
from stages.common.errors import LenetError
from stages.common.idx import parse_images, parse_labels, read_labelled_images


def idx_bytes(magic: int, dims, payload: bytes) -> bytes:
    """An IDX file: big-endian magic, big-endian uint32 dims, then the payload."""
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + payload


def image_file(images: np.ndarray) -> bytes:
    return idx_bytes(0x803, images.shape, images.astype(np.uint8).tobytes())


def label_file(labels) -> bytes:
    labels = np.asarray(labels, dtype=np.uint8)
    return idx_bytes(0x801, labels.shape, labels.tobytes())


def refused(call, *fragments: str) -> str:
    """Run ``call``; it must raise a one-line LenetError containing every fragment."""
    with pytest.raises(LenetError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# --- valid files ---------------------------------------------------------------------------


def test_images_parse_to_their_pixels_in_c_order():
    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    parsed = parse_images(image_file(images), "x")
    assert parsed.dtype == np.uint8 and parsed.shape == (3, 28, 28)
    np.testing.assert_array_equal(parsed, images)


def test_labels_parse_to_their_values():
    np.testing.assert_array_equal(parse_labels(label_file([0, 9, 3]), "y"), [0, 9, 3])


def test_read_labelled_images_hashes_the_whole_files(tmp_path):
    images = np.zeros((2, 28, 28), np.uint8)
    (tmp_path / "img").write_bytes(image_file(images))
    (tmp_path / "lab").write_bytes(label_file([1, 2]))
    data = read_labelled_images(tmp_path / "img", tmp_path / "lab")
    assert data.sha256 == {
        "img": hashlib.sha256(image_file(images)).hexdigest(),
        "lab": hashlib.sha256(label_file([1, 2])).hexdigest(),
    }
    np.testing.assert_array_equal(data.labels, [1, 2])


# --- malformed files -----------------------------------------------------------------------


@pytest.mark.parametrize("magic", [0x801, 0x903, 0x0D03, 0x01000803])
def test_image_file_with_bad_magic_is_refused(magic):
    data = idx_bytes(magic, (1, 28, 28), bytes(784))
    refused(lambda: parse_images(data, "train-images"), "train-images", "expected 0x00000803",
            f"0x{magic:08X}")


def test_label_file_with_image_magic_is_refused():
    data = image_file(np.zeros((1, 28, 28)))
    refused(lambda: parse_labels(data, "train-labels"), "train-labels", "0x00000803", "expected 0x00000801")


def test_truncated_image_file_is_refused():
    data = image_file(np.zeros((2, 28, 28)))[:-1]
    refused(lambda: parse_images(data, "f"), "f:", "truncated", str(16 + 2 * 784))


def test_image_file_with_trailing_bytes_is_refused():
    data = image_file(np.zeros((2, 28, 28))) + b"\0"
    refused(lambda: parse_images(data, "f"), "trailing bytes", str(16 + 2 * 784 + 1))


def test_file_shorter_than_its_header_is_refused():
    refused(lambda: parse_labels(b"\0\0\x08", "f"), "3 bytes", "at least 8")


def test_header_count_that_disagrees_with_the_data_is_refused():
    data = idx_bytes(0x803, (5, 28, 28), bytes(4 * 784))  # says 5 images, holds 4
    refused(lambda: parse_images(data, "f"), "5 x 28 x 28", "truncated")
    data = idx_bytes(0x801, (3,), bytes(4))  # says 3 labels, holds 4
    refused(lambda: parse_labels(data, "f"), "expected 11", "trailing bytes")


def test_empty_file_is_refused():
    refused(lambda: parse_labels(idx_bytes(0x801, (0,), b""), "f"), "0 labels", "at least 1")


def test_images_and_labels_of_different_counts_are_refused(tmp_path):
    (tmp_path / "img").write_bytes(image_file(np.zeros((3, 28, 28))))
    (tmp_path / "lab").write_bytes(label_file([1, 2]))
    refused(lambda: read_labelled_images(tmp_path / "img", tmp_path / "lab"),
            str(tmp_path / "lab"), "2 labels", "expected 3")


@pytest.mark.parametrize("dims", [(1, 32, 32), (1, 28, 27), (1, 27, 28)])
def test_images_of_another_size_are_refused(dims):
    data = idx_bytes(0x803, dims, bytes(int(np.prod(dims))))
    refused(lambda: parse_images(data, "f"), f"{dims[1]}x{dims[2]}", "expected 28x28")


def test_label_out_of_range_is_refused():
    refused(lambda: parse_labels(label_file([3, 10, 255]), "lab"), "lab", "label 10 at index 1",
            "expected 0-9", "2 label(s)")


def test_missing_file_is_refused(tmp_path):
    (tmp_path / "lab").write_bytes(label_file([1]))
    refused(lambda: read_labelled_images(tmp_path / "img", tmp_path / "lab"), str(tmp_path / "img"), "not found")


# --- the real files (facts from shared/mnist/README.md) -----------------------------------


@pytest.fixture(scope="module")
def mnist(mnist_mirror):
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    return {name: gzip.decompress((mnist_mirror / f"{name}.gz").read_bytes()) for name in names}


def test_real_files_match_their_published_checksums(mnist):
    assert hashlib.sha256(mnist["train-images-idx3-ubyte"]).hexdigest() == (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db")
    assert hashlib.sha256(mnist["t10k-labels-idx1-ubyte"]).hexdigest() == (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2")


def test_real_files_have_mnist_counts_and_first_labels(mnist):
    train_images = parse_images(mnist["train-images-idx3-ubyte"], "train-images")
    test_images = parse_images(mnist["t10k-images-idx3-ubyte"], "t10k-images")
    train_labels = parse_labels(mnist["train-labels-idx1-ubyte"], "train-labels")
    test_labels = parse_labels(mnist["t10k-labels-idx1-ubyte"], "t10k-labels")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert np.bincount(train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_real_training_pixels_have_the_published_mean_and_std(mnist):
    mean, std = pixel_mean_std(parse_images(mnist["train-images-idx3-ubyte"], "train-images"))
    assert round(mean, 4) == 0.1307
    assert round(std, 4) == 0.3081
