"""Augmentation: geometry (shift, rotation, scale), bilinear sampling, elastic fields, seeding."""

import math

import numpy as np
import pytest

from nn.augment import (affine_positions, augment, elastic_displacement, gaussian_matrix,
                        sample_bilinear)

ALL_ON = dict(max_shift=2.0, max_rotation=15.0, max_scale=0.1, elastic_alpha=34.0, elastic_sigma=4.0)


def digit_like(n=4, size=28, dtype=np.float32):
    """Centred blobs of varied shape, zero background (like normalised MNIST digits)."""
    rng = np.random.default_rng(123)
    grid = np.arange(size) - (size - 1) / 2
    rows, cols = grid[:, None], grid[None, :]
    images = []
    for _ in range(n):
        sy, sx = rng.uniform(1.5, 2.5, 2)
        images.append(np.exp(-0.5 * ((rows / sy) ** 2 + (cols / sx) ** 2)))
    return np.stack(images)[:, None].astype(dtype)


def shift_with_fill(image, dy, dx, fill):
    """np.roll of an (H, W) image by whole pixels, the wrapped-around part set to ``fill``."""
    out = np.roll(image, (dy, dx), axis=(0, 1))
    if dy > 0:
        out[:dy] = fill
    elif dy < 0:
        out[dy:] = fill
    if dx > 0:
        out[:, :dx] = fill
    elif dx < 0:
        out[:, dx:] = fill
    return out


def warp(x, rotation=0.0, scale=1.0, shift=(0.0, 0.0), fill=0.0):
    n, _, height, width = x.shape
    positions = affine_positions((height, width), np.full(n, rotation), np.full(n, scale),
                                 np.tile(shift, (n, 1)), dtype=x.dtype)
    return sample_bilinear(x, positions, fill)


# --- shapes, dtypes, seeding ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (3, 3, 9, 12)])
def test_shape_and_dtype_preserved(shape, dtype):
    x = np.random.default_rng(0).random(shape).astype(dtype)
    out = augment(x, np.random.default_rng(1), **ALL_ON)
    assert out.shape == shape and out.dtype == dtype
    assert not np.shares_memory(out, x)
    assert np.isfinite(out).all()


def test_same_seed_same_bytes_different_seed_different():
    x = digit_like(8)
    a = augment(x, np.random.default_rng(7), **ALL_ON)
    b = augment(x, np.random.default_rng(7), **ALL_ON)
    c = augment(x, np.random.default_rng(8), **ALL_ON)
    assert a.tobytes() == b.tobytes()
    assert not np.allclose(a, c, atol=1e-3)
    # Each image gets its own draw: no two outputs of identical inputs are equal.
    same = augment(np.repeat(x[:1], 4, axis=0), np.random.default_rng(7), **ALL_ON)
    assert not np.allclose(same[0], same[1], atol=1e-3)


def test_all_off_is_identity_without_drawing():
    x = digit_like(3)
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    assert augment(x, rng) is x
    assert augment(x, rng, elastic_sigma=9.0, fill=1.0) is x  # sigma/fill alone do nothing
    assert rng.bit_generator.state == state


def test_draw_order_is_as_documented():
    # rotations (N,), scales (N,), shifts (N, 2): rebuilding the warp from a twin
    # generator must give the very same bytes.
    x = digit_like(6)
    out = augment(x, np.random.default_rng(3), max_shift=2, max_rotation=10, max_scale=0.2, fill=0.5)
    twin = np.random.default_rng(3)
    rotation = twin.uniform(-10, 10, 6)
    scale = twin.uniform(0.8, 1.2, 6)
    shift = twin.uniform(-2, 2, (6, 2))
    expected = sample_bilinear(x, affine_positions((28, 28), rotation, scale, shift), 0.5)
    assert out.tobytes() == expected.tobytes()


# --- geometry ------------------------------------------------------------------------


@pytest.mark.parametrize("dy, dx", [(2, 0), (0, -3), (-1, 4), (5, 5), (0, 0)])
def test_integer_shift_equals_roll_with_fill(dy, dx):
    x = np.random.default_rng(0).random((2, 1, 11, 13)).astype(np.float32)
    out = warp(x, shift=(dy, dx), fill=-7.0)
    for image, result in zip(x[:, 0], out[:, 0]):
        np.testing.assert_array_equal(result, shift_with_fill(image, dy, dx, -7.0))


def test_half_pixel_shift_averages_neighbours():
    x = np.random.default_rng(0).random((1, 1, 6, 6))
    out = warp(x, shift=(0.0, 0.5))
    # Content moves right by half a pixel: each pixel is the mean of itself and its left one.
    np.testing.assert_allclose(out[0, 0, :, 1:], (x[0, 0, :, 1:] + x[0, 0, :, :-1]) / 2, rtol=1e-12)


@pytest.mark.parametrize("angle, turns", [(90.0, 1), (-90.0, -1), (180.0, 2)])
def test_rotation_matches_rot90_counter_clockwise(angle, turns):
    # Positive angles turn the content counter-clockwise as displayed, like np.rot90.
    x = np.random.default_rng(1).random((2, 1, 9, 9)).astype(np.float32)
    out = warp(x, rotation=angle)
    np.testing.assert_allclose(out, np.rot90(x, k=turns, axes=(2, 3)), atol=1e-5)


def test_rotation_by_90_of_an_arrow_points_up():
    image = np.zeros((1, 1, 7, 7))
    image[0, 0, 3, 3:] = 1.0  # a bar from the centre to the right edge
    out = warp(image, rotation=90.0)
    expected = np.zeros((7, 7))
    expected[:4, 3] = 1.0  # counter-clockwise: now from the centre to the top edge
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-12)


def test_scale_enlarges_about_the_centre():
    x = np.random.default_rng(2).random((1, 1, 9, 9))
    out = warp(x, scale=2.0)
    c = 4
    assert out[0, 0, c, c] == pytest.approx(x[0, 0, c, c], abs=1e-12)  # the centre stays
    # Twice as large: the output 2 pixels from the centre shows the input 1 pixel from it.
    assert out[0, 0, c, c + 2] == pytest.approx(x[0, 0, c, c + 1], abs=1e-12)
    assert out[0, 0, c - 4, c] == pytest.approx(x[0, 0, c - 2, c], abs=1e-12)


def mass_and_spread(images):
    """Per image: total mass, share of it in the 4-pixel border, centre-of-mass offset."""
    mass = images.sum(axis=(1, 2, 3))
    inner = images[:, :, 4:-4, 4:-4].sum(axis=(1, 2, 3))
    grid = np.arange(images.shape[2]) - (images.shape[2] - 1) / 2
    centre_row = (images[:, 0].sum(axis=2) * grid).sum(axis=1) / mass
    centre_col = (images[:, 0].sum(axis=1) * grid).sum(axis=1) / mass
    return mass, 1 - inner / mass, np.hypot(centre_row, centre_col)


def test_centred_digit_mostly_stays_inside():
    x = digit_like(64)
    mass_in, _, _ = mass_and_spread(x)
    # The pipeline's affine settings: scale 0.9-1.1 changes the area by 0.81-1.21.
    out = augment(x, np.random.default_rng(0), max_shift=2.0, max_rotation=10.0, max_scale=0.1)
    mass, border, offset = mass_and_spread(out)
    assert np.all((mass / mass_in > 0.78) & (mass / mass_in < 1.25))
    assert border.max() < 0.005
    assert offset.max() < 2 * math.sqrt(2) + 0.1  # moved by the shift, no more
    # Everything on, with Simard's strong elastic field: local stretching changes single
    # images' mass a lot, but on average it is kept and the digit stays in the middle.
    out = augment(x, np.random.default_rng(0), **ALL_ON)
    mass, border, offset = mass_and_spread(out)
    assert abs((mass / mass_in).mean() - 1) < 0.15
    assert border.max() < 0.03
    assert offset.max() < 6.0  # the shift plus displacements of ~1.4 px rms


def test_fill_outside_the_image():
    ones = np.ones((2, 1, 15, 15), dtype=np.float32)
    out = augment(ones, np.random.default_rng(0), max_rotation=45.0, max_scale=0.0, fill=0.25)
    twin = np.random.default_rng(0).uniform(-45, 45, 2)
    assert np.all(np.abs(twin) > 5)  # both images really turn, so corners leave the image
    assert np.all(out[:, 0, 0, 0] == np.float32(0.25))  # a corner reads outside: fill
    assert np.all(out[:, 0, 7, 7] == 1.0)  # the centre reads inside
    assert out.min() == np.float32(0.25) and out.max() == 1.0  # blends stay between the two
    far = sample_bilinear(ones, np.full((2, 2, 15, 15), -50.0, dtype=np.float32), fill=3.0)
    assert np.all(far == 3.0)


# --- bilinear sampling against a slow reference ---------------------------------------


def sample_bilinear_loops(x, positions, fill):
    """Obviously correct: each output pixel, each of its four neighbours, bounds by hand."""
    n, channels, height, width = x.shape
    out = np.empty_like(x)

    def read(k, ch, r, c):
        return x[k, ch, r, c] if 0 <= r < height and 0 <= c < width else fill

    for k in range(n):
        for i in range(height):
            for j in range(width):
                r, c = positions[0, k, i, j], positions[1, k, i, j]
                r0, c0 = math.floor(r), math.floor(c)
                wr, wc = r - r0, c - c0
                for ch in range(channels):
                    out[k, ch, i, j] = ((1 - wr) * (1 - wc) * read(k, ch, r0, c0)
                                        + (1 - wr) * wc * read(k, ch, r0, c0 + 1)
                                        + wr * (1 - wc) * read(k, ch, r0 + 1, c0)
                                        + wr * wc * read(k, ch, r0 + 1, c0 + 1))
    return out


def test_sample_bilinear_matches_loop_reference():
    rng = np.random.default_rng(4)
    x = rng.random((3, 2, 5, 7))
    positions = np.stack([rng.uniform(-3, 8, (3, 5, 7)), rng.uniform(-3, 10, (3, 5, 7))])
    positions[:, 0, 0, 0] = [4.0, 6.0]  # exactly the last pixel
    positions[:, 0, 0, 1] = [-0.5, 6.5]  # half outside on both axes
    expected = sample_bilinear_loops(x, positions, fill=-2.0)
    np.testing.assert_allclose(sample_bilinear(x, positions, fill=-2.0), expected, rtol=1e-12, atol=1e-12)
    assert expected[0, 0, 0, 0] == x[0, 0, 4, 6]


# --- elastic distortion --------------------------------------------------------------


def test_gaussian_matrix_is_a_zero_padded_convolution():
    sigma, size = 2.0, 20
    radius = int(4 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    signal = np.random.default_rng(0).random(size)
    expected = np.convolve(signal, kernel, mode="same")  # zeros beyond the ends
    np.testing.assert_allclose(gaussian_matrix(size, sigma, np.float64) @ signal, expected, rtol=1e-12)


def test_elastic_displacement_is_a_separable_blur():
    rng = np.random.default_rng(1)
    field = rng.uniform(-1, 1, (3, 10, 12))
    blurred = elastic_displacement(field, alpha=5.0, sigma=1.5)
    g_rows, g_cols = gaussian_matrix(10, 1.5, np.float64), gaussian_matrix(12, 1.5, np.float64)
    expected = np.stack([5.0 * g_rows @ f @ g_cols.T for f in field])
    np.testing.assert_allclose(blurred, expected, rtol=1e-12)


def test_elastic_field_has_simard_magnitude():
    # alpha 34, sigma 4 on 28x28 (Simard et al.): displacements of about 1-2 pixels, smooth.
    field = np.random.default_rng(2).uniform(-1, 1, (200, 28, 28))
    displacement = elastic_displacement(field, alpha=34.0, sigma=4.0)
    interior = displacement[:, 8:-8, 8:-8]
    assert 1.0 < interior.std() < 2.0
    # Neighbouring pixels move together (the point of smoothing).
    assert np.abs(np.diff(interior, axis=2)).mean() < 0.2 * np.abs(interior).mean()


def test_elastic_alone_matches_its_definition():
    x = digit_like(3)
    out = augment(x, np.random.default_rng(9), elastic_alpha=8.0, elastic_sigma=3.0)
    twin = np.random.default_rng(9)
    field = 2 * twin.random((2 * 3, 28, 28), dtype=np.float32) - 1  # (dy..., dx...) per image
    displacement = elastic_displacement(field, 8.0, 3.0).reshape(2, 3, 28, 28)
    identity = affine_positions((28, 28), np.zeros(3), np.ones(3), np.zeros((3, 2)))
    expected = sample_bilinear(x, identity + displacement)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.abs(out - x).max() > 0.01  # it did distort


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize("kw, message", [
    (dict(max_shift=-1.0), "max_shift must be"),
    (dict(max_rotation=float("nan")), "max_rotation must be"),
    (dict(max_scale=1.0), "max_scale must be < 1"),
    (dict(elastic_alpha=1.0, elastic_sigma=0.0), "elastic_sigma must be > 0"),
    (dict(max_shift=1.0, fill=float("inf")), "fill must be finite"),
])
def test_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        augment(digit_like(1), np.random.default_rng(0), **kw)


@pytest.mark.parametrize("x", [np.zeros((2, 28, 28), np.float32), np.zeros((1, 1, 4, 4), np.int64)])
def test_bad_images(x):
    with pytest.raises(ValueError, match=r"x must be an \(N, C, H, W\) float32 or float64"):
        augment(x, np.random.default_rng(0), max_shift=1.0)


def test_sample_bilinear_checks_positions():
    x = np.zeros((2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"positions must have shape \(2, 2, 4, 4\)"):
        sample_bilinear(x, np.zeros((2, 2, 4, 5)))
    with pytest.raises(ValueError, match="positions must be finite"):
        sample_bilinear(x, np.full((2, 2, 4, 4), np.nan))
