"""The MNIST-style preprocessing of lenet/preprocess.py: pure array functions."""

from __future__ import annotations

import numpy as np
import pytest

from lenet import preprocess as pp
from tests.mnist_mirror import needs_mirror
from tests.small_model import read_mnist


def stroke_image(shape=(60, 40), background=255, ink=0) -> np.ndarray:
    """A vertical bar of ink off-centre on a plain background, uint8 (H, W)."""
    image = np.full(shape, background, dtype=np.uint8)
    image[10:50, 5:9] = ink
    return image


def test_grayscale_of_each_layout():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    gray = pp.grayscale(rgb)
    assert gray.shape == (2, 2) and gray[0, 0] == pytest.approx(0.299, abs=1e-6) and gray[1, 1] == 0
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 1, 3] = 255  # opaque black; the other pixel is transparent: shown as white
    np.testing.assert_allclose(pp.grayscale(rgba), [[1.0, 0.0]])
    np.testing.assert_allclose(pp.grayscale(np.array([[0, 255]], np.uint8)), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="uint8"):
        pp.grayscale(np.zeros((2, 2)))


@pytest.mark.parametrize("background, ink", [(255, 0), (0, 255), (200, 60), (40, 180)])
def test_ink_is_one_on_strokes_and_zero_on_paper_whatever_the_colours(background, ink):
    result = pp.ink(pp.grayscale(stroke_image(background=background, ink=ink)))
    assert result.max() == 1.0 and result[10:50, 5:9].min() == 1.0
    assert result.sum() == 40 * 4


def test_a_blank_or_nearly_blank_image_has_no_digit():
    with pytest.raises(pp.NoDigit):
        pp.mnist_pixels(np.full((30, 30, 3), 123, np.uint8))
    faint = np.full((30, 30), 200, np.uint8)
    faint[10, 10] = 190  # 4% darker: paper texture, not a digit
    with pytest.raises(pp.NoDigit):
        pp.mnist_pixels(faint)


def test_crop_fit_and_centre_shapes():
    crop = pp.crop_to_ink(pp.ink(pp.grayscale(stroke_image())))
    assert crop.shape == (40, 4)
    fitted = pp.fit_box(crop)
    assert fitted.shape == (20, 2)  # the longer side to 20, aspect ratio kept
    canvas = pp.center_by_mass(fitted)
    assert canvas.shape == (28, 28)
    rows, cols = np.nonzero(canvas)
    # Mass at (9.5, 0.5) moves to (14, 14): half-pixel shifts, rounded half to even.
    assert (rows.min(), rows.max()) == (4, 23) and (cols.min(), cols.max()) == (14, 15)


def triangle_weights(size_in: int, size_out: int) -> np.ndarray:
    """The reference resampling of one axis, (size_out, size_in): a triangle filter whose support
    widens with the shrink factor (every input pixel counts), weights summing to 1."""
    scale = size_in / size_out
    centres = (np.arange(size_out) + 0.5) * scale - 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(size_in)[None, :] - centres[:, None]) / max(1.0, scale))
    return weights / weights.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("shape", [(40, 4), (5, 7), (20, 19), (30, 30), (300, 170), (1, 900), (1280, 3)])
def test_fit_box_is_the_antialiased_triangle_filter(shape):
    crop = np.random.default_rng(0).random(shape, dtype=np.float32)
    fitted = pp.fit_box(crop)
    h, w = fitted.shape
    assert max(h, w) == 20 and fitted.dtype == np.float32
    np.testing.assert_allclose(fitted, triangle_weights(shape[0], h) @ crop @ triangle_weights(shape[1], w).T,
                               atol=2e-6)


def test_a_crop_far_larger_than_the_box_is_averaged_down_first_and_stays_close():
    """Past REDUCING_GAP times the box, Pillow first box-averages by a whole factor (bounded memory)."""
    crop = np.random.default_rng(1).random((2, 5000), dtype=np.float32)
    fitted = pp.fit_box(crop)
    assert fitted.shape == (1, 20)
    np.testing.assert_allclose(fitted, triangle_weights(2, 1) @ crop @ triangle_weights(5000, 20).T, atol=1e-3)


def test_a_lopsided_digit_is_never_clipped():
    digit = np.zeros((20, 20), np.float32)
    digit[:, 0] = 1  # all the mass on the left edge
    canvas = pp.center_by_mass(digit)
    # The mass would go to column 14, but the digit is 20 wide: column 8 keeps it all inside.
    assert canvas.sum() == digit.sum() and canvas[:, 8].sum() == 20


@needs_mirror
def test_mnist_digits_come_back_nearly_unchanged():
    """MNIST's digits were made this way: preprocessing them again changes almost nothing."""
    images, _ = read_mnist("t10k", 300)
    diffs = [np.abs(pp.mnist_pixels(image).astype(int) - image).mean() for image in images]
    assert np.mean(diffs) < 1.0  # of 255 (measured 0.43)
    assert np.median(diffs) < 0.5


def test_model_input_is_the_pipelines_normalization():
    digit = np.zeros((28, 28), np.uint8)
    digit[5, 5] = 255
    x = pp.model_input(digit, 0.1, 0.3)
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32
    assert x[0, 0, 0, 0] == pytest.approx(-1 / 3) and x[0, 0, 5, 5] == pytest.approx(3.0)


def test_transparent_pixels_show_white_unless_the_ink_is_light():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 255, 255, 255)  # white ink; the rest transparent
    np.testing.assert_allclose(pp.grayscale(rgba), [[1, 0], [0, 0]])  # on black: the ink shows
    rgba[0, 0] = (0, 0, 0, 255)  # black ink
    np.testing.assert_allclose(pp.grayscale(rgba), [[0, 1], [1, 1]])  # on white, as a viewer shows it
    np.testing.assert_allclose(pp.grayscale(np.zeros((2, 2, 2), np.uint8)), 1)  # all transparent: white


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_grayscale_in_chunks_is_the_whole_image_formula(monkeypatch, channels):
    pixels = np.random.default_rng(channels).integers(0, 256, (37, 53, channels), dtype=np.uint8)
    luma = pixels[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114] if channels >= 3 else pixels[..., 0] * 1.0
    expected = luma / 255
    if channels in (2, 4):
        alpha = pixels[..., -1] / 255
        light = (expected * alpha).sum() / alpha.sum() > 0.5
        expected = expected * alpha + (0 if light else 1 - alpha)
    monkeypatch.setattr(pp, "CHUNK", 100)  # 20 chunks
    np.testing.assert_allclose(pp.grayscale(pixels), expected, atol=1e-6)


def test_ink_overwrites_a_float32_grey_image_instead_of_copying_it():
    gray = pp.grayscale(stroke_image())
    assert pp.ink(gray) is gray


@pytest.mark.parametrize("columns, expected", [
    ({4: (2, 26)}, 1),                         # one tall mark
    ({4: (2, 26), 20: (2, 26)}, 2),            # two, side by side
    ({4: (2, 26), 20: (2, 8)}, 1),             # a tall mark and a short detached stroke
    ({4: (2, 26), 20: (2, 14)}, 2),            # half the height counts as a digit
    ({}, 0),
])
def test_marks_side_by_side(columns, expected):
    digit = np.zeros((28, 28), np.uint8)
    for column, (top, bottom) in columns.items():
        digit[top:bottom, column:column + 3] = 255
    assert pp.marks_side_by_side(digit) == expected


@needs_mirror
def test_no_mnist_digit_counts_as_two_marks():
    images, _ = read_mnist("t10k", 1000)
    assert [pp.marks_side_by_side(pp.mnist_pixels(image)) for image in images] == [1] * len(images)
