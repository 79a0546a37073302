"""Issue 17, item 1: memory is bounded by the pixel count, whatever the image's shape.

The bound (README, "Use the trained network"): classifying an image takes at most
``BYTES_PER_PIXEL`` bytes per pixel above the decoded image itself, plus ``SLACK``. Each
case runs as a fresh process under an address-space limit (``RLIMIT_AS``) of exactly that
bound above the process's own baseline, so a regression fails here with a MemoryError
instead of swapping the machine; the peak RSS is checked against the same bound.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.small_model import small_model  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BYTES_PER_PIXEL = 8  # a float32 grey copy, and at worst a float32 copy of the crop for Pillow
SLACK = 40 << 20     # decoders' buffers, allocator rounding
# Runs `lenet ARGS` as the console script does, then reports the process's peaks on stderr.
MEASURED = """
import json, runpy, sys
sys.argv = ["lenet", *sys.argv[1:]]
try:
    runpy.run_module("lenet.cli", run_name="__main__")
finally:
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(json.dumps({key: int(status[key].split()[0]) * 1024 for key in ("VmPeak", "VmHWM")}), file=sys.stderr)
"""


def lenet_measured(*args, address_space: int | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``lenet ARGS`` in a fresh process (limited to ``address_space`` bytes); its result and peaks."""
    def limit():
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    result = subprocess.run([sys.executable, "-c", MEASURED, *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, preexec_fn=limit)
    lines = result.stderr.strip().splitlines()
    return result, json.loads(lines[-1])


def one_digit(size: tuple[int, int], mode: str, paper, pen, fill_paper: bool = False) -> Image.Image:
    """A 7 on paper; with ``fill_paper``, ink covers all but a one-pixel frame (the largest crop)."""
    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    w, h = size
    side = min(w, h)
    if fill_paper:
        draw.rectangle((1, 1, w - 2, h - 2), fill=pen)
        draw.rectangle((w // 3, h // 3, w // 2, h // 2), fill=paper)
    else:
        x = w // 2 - side // 3
        draw.line([(x, side * 0.1), (x + side * 0.6, side * 0.1), (x + side * 0.25, side * 0.9)], fill=pen,
                  width=max(1, side // 12))
    return image


@pytest.fixture(scope="module")
def baseline(small_model, tmp_path_factory) -> dict:
    """The peaks of `lenet predict` on a 28x28 digit: Python, NumPy, Pillow and the model."""
    path = tmp_path_factory.mktemp("baseline") / "small.png"
    one_digit((28, 28), "L", 255, 0).save(path)
    result, peaks = lenet_measured("predict", "--model", small_model, path)
    assert result.returncode == 0, result.stderr
    return peaks


CASES = {
    "5000x5000 RGBA, ink everywhere": lambda: one_digit((5000, 5000), "RGBA", (250, 250, 240, 255),
                                                        (10, 10, 60, 255), fill_paper=True),
    "5000x5000 RGB JPEG photo": lambda: one_digit((5000, 5000), "RGB", (250, 250, 240), (10, 10, 60)),
    "50000x500 RGBA strip, white on transparent": lambda: one_digit((50_000, 500), "RGBA", (255, 255, 255, 0),
                                                                    (255, 255, 255, 255)),
    "500x50000 16-bit grey": lambda: one_digit((500, 50_000), "I;16", 60_000, 1_000),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_large_image_of_any_accepted_shape_stays_within_the_bound(case, small_model, baseline, tmp_path):
    image = CASES[case]()
    path = tmp_path / ("photo.jpg" if "JPEG" in case else "image.png")
    image.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
    pixels = image.width * image.height
    decoded = pixels * {"RGBA": 4, "RGB": 3}.get(image.mode, 1)
    bound = decoded + BYTES_PER_PIXEL * pixels + SLACK
    result, peaks = lenet_measured("predict", "--model", small_model, path,
                                   address_space=baseline["VmPeak"] + bound)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: "), result.stdout
    above = peaks["VmHWM"] - baseline["VmHWM"]
    assert above <= bound, f"{above / 2**20:.0f} MB above the baseline; the bound is {bound / 2**20:.0f} MB"


def test_a_one_pixel_strip_of_twenty_million_is_refused_on_its_header(small_model, baseline, tmp_path):
    path = tmp_path / "strip.png"
    Image.new("L", (20_000_000, 1), 255).save(path)  # 20 kB of PNG
    result, peaks = lenet_measured("predict", "--model", small_model, path,
                                   address_space=baseline["VmPeak"] + SLACK)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"error: {path}: image is 20000000x1: one side is over 100 times the other, "
        "a strip rather than a picture of one digit")
    assert peaks["VmHWM"] - baseline["VmHWM"] < SLACK


PREPROCESS_STRIP = """
import resource, sys
import numpy as np
from lenet.preprocess import mnist_pixels
strip = np.full((1, 20_000_000), 255, np.uint8)
strip[0, 9_000_000:11_000_000] = 0
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
resource.setrlimit(resource.RLIMIT_AS, (int(status["VmSize"].split()[0]) * 1024 + int(sys.argv[1]),) * 2)
digit = mnist_pixels(strip)
print(int(digit.sum() > 0))
"""


def test_preprocessing_alone_holds_the_bound_for_a_one_pixel_strip():
    """The resampling itself, without the header check: the issue's 2.5 GB strip."""
    pixels = 20_000_000
    result = subprocess.run([sys.executable, "-c", PREPROCESS_STRIP, str(BYTES_PER_PIXEL * pixels + SLACK)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stdout.strip()) == (0, "1"), result.stderr[-2000:]


def vm(pid: int, key: str) -> int:
    """``VmRSS``, ``VmHWM``, ... of process ``pid``, in bytes."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(status[key].split()[0]) * 1024


def test_two_large_uploads_at_once_stay_within_the_bound_in_the_server(small_model, tmp_path):
    image = one_digit((2048, 2048), "RGBA", (250, 250, 240, 255), (10, 10, 60, 255), fill_paper=True)
    path = tmp_path / "upload.png"
    image.save(path)
    bound_each = 4 * 2048 * 2048 + BYTES_PER_PIXEL * 2048 * 2048 + SLACK
    server = subprocess.Popen([sys.executable, "-m", "lenet.cli", "serve", "--model", small_model, "--port", "0"],
                              cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+/", server.stderr.readline())[0]
        before = vm(server.pid, "VmRSS")
        answers = []

        def post():
            request = urllib.request.Request(f"{url}predict", data=path.read_bytes(),
                                             headers={"Content-Type": "image/png"})
            with urllib.request.urlopen(request, timeout=120) as response:
                answers.append(response.status)

        threads = [threading.Thread(target=post) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = vm(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert answers == [200, 200]
    assert peak - before <= 2 * bound_each, f"{(peak - before) / 2**20:.0f} MB for two uploads"
