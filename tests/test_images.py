"""lenet/images.py: decoding with Pillow, refusing what is not a usable image."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from lenet.images import ImageError, decode
from tests.image_files import png_header


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_huge_image_is_refused_on_its_header_without_decoding(monkeypatch):
    def no_decoding(self):
        raise AssertionError("the pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match="6000x6000 = 36,000,000 pixels, more than the limit of 25,000,000"):
        decode(png_header(6000, 6000))
    with pytest.raises(ImageError, match="more than the limit of 100"):
        decode(encoded(Image.new("L", (11, 10))), max_pixels=100)


@pytest.mark.parametrize("mode, shape", [("L", (4, 6)), ("LA", (4, 6, 2)), ("RGB", (4, 6, 3)), ("RGBA", (4, 6, 4)),
                                         ("P", (4, 6, 3)), ("I;16", (4, 6)), ("1", (4, 6, 3))])
def test_every_mode_becomes_grey_or_colour_uint8(mode, shape):
    pixels = decode(encoded(Image.new(mode, (6, 4))))
    assert pixels.shape == shape and pixels.dtype == np.uint8


def test_sixteen_bit_grey_keeps_its_contrast():
    image = Image.fromarray(np.array([[0, 30000, 60000]], dtype=np.uint16))
    np.testing.assert_array_equal(decode(encoded(image)), [[0, 128, 255]])


def test_other_formats_are_not_images():
    with pytest.raises(ImageError, match="not an image"):
        decode(encoded(Image.new("RGB", (5, 5)), "TIFF"))


@pytest.mark.parametrize("width, height", [(20_000_000, 1), (1, 20_000_000), (10_100, 100), (101, 1)])
def test_a_strip_is_refused_on_its_header_without_decoding(monkeypatch, width, height):
    def no_decoding(self):
        raise AssertionError("the pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match=f"image is {width}x{height}: one side is over 100 times the other"):
        decode(png_header(width, height))


def test_a_ratio_of_100_is_still_an_image():
    assert decode(encoded(Image.new("L", (100, 1)))).shape == (1, 100)


def test_sixteen_bit_grey_is_scaled_a_few_rows_at_a_time_with_the_same_result(monkeypatch):
    values = np.random.default_rng(0).integers(0, 65_536, (300, 70), dtype=np.uint16)
    expected = np.round(np.clip(values / values.max(), 0, 1) * 255).astype(np.uint8)
    monkeypatch.setattr("lenet.images.ROW_PIXELS", 1000)  # 14 rows per step
    np.testing.assert_array_equal(decode(encoded(Image.fromarray(values))), expected)
