"""``lenet predict`` end to end, as a user runs it (a subprocess: real exit codes and output).

The model is a small LeNet-5 trained in-process on MNIST (``tests/small_model.py``), so
these tests need the local MNIST mirror and skip, visibly, without it.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lenet.preprocess import mnist_pixels
from stages.common.model_files import normalize_pixels
from stages.common.model_files import read_model
from nn.serialization import write_npz
from tests.image_files import png_header
from tests.small_model import read_mnist, small_model  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]


def predict(*args: str | Path, env: dict | None = None, address_space: int | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """``lenet predict ARGS`` in a fresh process (``env`` added to ours; at most ``address_space`` bytes)."""
    def limit():
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    return subprocess.run([sys.executable, "-m", "lenet.cli", "predict", *(os.fsdecode(a) if isinstance(a, (bytes, Path)) else str(a) for a in args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, preexec_fn=limit,
                          env={**os.environ, **(env or {})}, errors="surrogateescape")


def predict_json(*args) -> tuple[dict[str, dict], subprocess.CompletedProcess]:
    result = predict("--json", *args)
    return {Path(r["file"]).name: r for r in json.loads(result.stdout)}, result


@pytest.fixture(scope="module")
def ten_digits(mnist_mirror):  # (read_mnist reads from it; skipped without MNIST)
    """The first test image of each class (raw IDX pixels, 0 = background) and its label."""
    images, labels = read_mnist("t10k", 200)
    first = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]
    return images[first], labels[first]


@pytest.fixture(params=["small", "pipeline"])
def any_model(request) -> Path:
    """The small model trained here, and the pipeline's ``models/`` when ``dvc repro`` made it."""
    if request.param == "small":
        return request.getfixturevalue("small_model")
    if not (ROOT / "models" / "model.npz").exists():
        pytest.skip(f"no pipeline model at {ROOT / 'models/model.npz'} (run dvc repro)")
    return ROOT / "models" / "model.npz"


@pytest.mark.slow
def test_transformed_copies_are_classified_as_the_model_classifies_the_originals(any_model, ten_digits, tmp_path):
    images, labels = ten_digits
    model, _, stats = read_model(any_model.parent)
    originals = model.eval().forward(normalize_pixels(images, stats["mean"], stats["std"])).argmax(axis=1)
    # Ten clear digits: a model that got them wrong would make the comparison meaningless.
    assert (originals == labels).sum() >= 9, (originals, labels)

    variants = {
        "big": lambda ink: Image.fromarray(ink).resize((100, 100), Image.BICUBIC),  # light on dark
        "inverted": lambda ink: Image.fromarray(255 - ink).resize((100, 100), Image.BICUBIC),
        "coloured": lambda ink: coloured(ink).resize((100, 100), Image.BICUBIC),
        "jpeg_small_corner": lambda ink: corner(ink),
    }
    for i, image in enumerate(images):
        for name, make in variants.items():
            suffix = ".jpg" if "jpeg" in name else ".png"
            make(image).save(tmp_path / f"{i}_{name}{suffix}", quality=95)
    records, result = predict_json("--model", any_model, tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(records) == 10 * len(variants)
    for i in range(10):
        for name in variants:
            record = records[f"{i}_{name}{'.jpg' if 'jpeg' in name else '.png'}"]
            assert record["digit"] == originals[i], (i, name, record)
            assert len(record["top3"]) == 3 and record["top3"][0]["digit"] == record["digit"]
            assert sum(record["probabilities"]) == pytest.approx(1.0)


def coloured(ink: np.ndarray) -> Image.Image:
    """Dark-blue ink on a light-yellow paper, RGB."""
    paper, pen = np.array([250, 240, 170.0]), np.array([20, 30, 120.0])
    alpha = ink[..., None] / 255.0
    return Image.fromarray(np.round(paper * (1 - alpha) + pen * alpha).astype(np.uint8), "RGB")


def corner(ink: np.ndarray) -> Image.Image:
    """Black ink on white, enlarged to 60x60, off in a corner of a 200x150 page (a JPEG)."""
    page = Image.new("L", (200, 150), 255)
    page.paste(Image.fromarray(255 - ink).resize((60, 60), Image.BICUBIC), (130, 10))
    return page


def test_text_output_and_save_input(small_model, ten_digits, tmp_path):
    images, _ = ten_digits
    Image.fromarray(255 - images[7]).resize((140, 140), Image.BICUBIC).save(tmp_path / "seven.png")
    result = predict("--model", small_model.parent, "--save-input", tmp_path / "seen", tmp_path / "seven.png")
    assert result.returncode == 0, result.stderr
    line, = result.stdout.splitlines()
    assert line.startswith(f"{tmp_path / 'seven.png'}: 7 ")
    assert line.count("%") == 3  # the top-3 probabilities
    seen = np.asarray(Image.open(tmp_path / "seen" / "seven.png"))
    assert seen.shape == (28, 28) and seen.dtype == np.uint8
    np.testing.assert_array_equal(seen, mnist_pixels(np.asarray(Image.open(tmp_path / "seven.png"))))


def test_each_bad_input_gets_one_line_and_the_good_files_are_still_classified(small_model, ten_digits, tmp_path):
    images, _ = ten_digits
    good = tmp_path / "good.png"
    Image.fromarray(images[3]).resize((56, 56)).save(good)
    bad = {
        "missing.png": None,
        "not_an_image.png": b"this is text, not a picture\n",
        "empty.png": b"",
        "truncated.png": good.read_bytes()[: len(good.read_bytes()) // 2],
        "truncated.jpg": jpeg_bytes(images[3])[:300],
        "blank.png": Image.new("RGB", (64, 64), (200, 180, 40)),
        "huge.png": png_header(6000, 6000),  # 36 Mpx claimed, no pixel data behind it
    }
    for name, content in bad.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        elif content is not None:
            content.save(tmp_path / name)
    result = predict("--model", small_model, tmp_path / "missing.png", tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    by_file = {Path(line.split(": ")[1]).name: line for line in errors[:-1]}
    expected = {
        "missing.png": "file not found",
        "not_an_image.png": "not an image",
        "empty.png": "empty (0 bytes)",
        "truncated.png": "truncated",
        "truncated.jpg": "truncated",
        "blank.png": "no digit",
        "huge.png": "6000x6000 = 36,000,000 pixels, more than the limit",  # refused on the header
    }
    assert set(by_file) == set(expected), errors
    for name, problem in expected.items():
        assert problem in by_file[name].lower(), by_file[name]
    assert errors[-1] == "error: 7 of 8 input(s) could not be classified"
    assert result.stdout.splitlines() == [line for line in result.stdout.splitlines() if "good.png: 3 " in line]
    assert len(result.stdout.splitlines()) == 1


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((80, 80)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_the_pixel_limit_is_an_option(small_model, tmp_path):
    Image.new("L", (100, 100), 0).save(tmp_path / "a.png")
    result = predict("--model", small_model, "--max-pixels", 5000, tmp_path / "a.png")
    assert result.returncode == 1
    assert "100x100 = 10,000 pixels, more than the limit of 5,000" in result.stderr


def test_an_empty_directory_is_reported(small_model, tmp_path):
    (tmp_path / "empty").mkdir()
    result = predict("--model", small_model, tmp_path / "empty")
    assert result.returncode == 1
    assert f"error: {tmp_path / 'empty'}: directory holds no" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("damage, problem", [
    ("other_architecture", "shape"),
    ("no_preprocessing", "preprocessing.json: missing"),
    ("bad_preprocessing", "preprocessing.json: mean must be a valid number, got 'a lot'"),
    ("no_model", "model.npz: missing"),
])
def test_a_model_that_does_not_fit_is_one_line(small_model, tmp_path, damage, problem):
    for name in ("model.npz", "model.json", "preprocessing.json"):
        shutil.copy(small_model.with_name(name), tmp_path / name)
    if damage == "other_architecture":  # the weights are 8/24 channels; the config says 6/16
        config = json.loads((tmp_path / "model.json").read_text())
        (tmp_path / "model.json").write_text(json.dumps({**config, "channels": [6, 16]}))
    elif damage == "no_preprocessing":
        (tmp_path / "preprocessing.json").unlink()
    elif damage == "bad_preprocessing":
        (tmp_path / "preprocessing.json").write_text('{"mean": "a lot"}')
    else:
        (tmp_path / "model.npz").unlink()
    Image.new("L", (30, 30), 0).save(tmp_path / "x.png")
    result = predict("--model", tmp_path / "model.npz", tmp_path / "x.png")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], lines
    assert result.stdout == ""


# --- issue 17: broken models, odd file names, doubtful answers ---------------------------


def copy_model(small_model: Path, directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    for name in ("model.npz", "model.json", "preprocessing.json"):
        shutil.copy(small_model.with_name(name), directory / name)
    return directory


def change_weight(name: str, value: float, everywhere: bool = False):
    """Damage: one value of the weight ``name`` (or all of them) set to ``value``."""
    def damage(directory: Path) -> None:
        with np.load(directory / "model.npz") as archive:
            state = {key: archive[key] for key in archive.files}
        if everywhere:
            state[name][...] = value
        else:
            state[name].flat[3] = value
        with open(directory / "model.npz", "wb") as handle:
            write_npz(handle, state)
    return damage


def change_json(name: str, text: str):
    """Damage: ``text`` (JSON members) added to the object in ``name``; a repeated key takes its new value."""
    def damage(directory: Path) -> None:
        values = json.loads((directory / name).read_text())
        (directory / name).write_text(json.dumps(values)[:-1] + ", " + text + "}")
    return damage


BROKEN_MODELS = {
    "NaN weight": (change_weight("fc2.weight", np.nan), "model.npz: NaN or infinite values in fc2.weight"),
    "infinite weight": (change_weight("conv1.weight", -np.inf), "model.npz: NaN or infinite values in conv1.weight"),
    "weights that overflow": (change_weight("fc3.weight", 1e38, everywhere=True), "the model's probabilities are NaN"),
    "NaN leaky_slope": (change_json("model.json", '"leaky_slope": NaN'),
                        "model.json: leaky_slope must be a finite number, got nan"),
    "std of 1e-300": (change_json("preprocessing.json", '"std": 1e-300'),
                      "preprocessing.json: std must be greater than or equal to 0.001, got 1e-300"),
    "hidden of 500000": (change_json("model.json", '"hidden": [500000, 84]'),
                         "model.json: hidden[0] must be less than or equal to 65536, got 500000"),
    "hidden that does not fit": (change_json("model.json", '"hidden": [60000, 84]'),
                                 "model.json: hidden [60000, 84] does not fit model.npz, whose fc1.weight has shape"),
    "infinite channels": (change_json("model.json", '"channels": [Infinity, 16]'),
                          "model.json: channels[0] must be a valid integer, got inf"),
    "a string for an activation": (change_json("model.json", '"activation": "swish"'),
                                   "model.json: activation must be 'relu', 'leaky_relu', 'tanh' or 'sigmoid', got 'swish'"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BROKEN_MODELS))
def test_a_broken_model_is_one_line_naming_its_file_never_a_digit(case, small_model, ten_digits, tmp_path):
    damage, problem = BROKEN_MODELS[case]
    model = copy_model(small_model, tmp_path / "model")
    damage(model)
    Image.fromarray(ten_digits[0][7]).save(tmp_path / "seven.png")
    # 1 GB of address space: enough for the command, far from what the sizes allocated.
    result = predict("--model", model, tmp_path / "seven.png", address_space=1 << 30, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    line, = result.stderr.splitlines()
    assert line.startswith(f"error: {model}") and problem in line, line


@pytest.mark.slow
def test_every_file_name_gets_its_own_line_whatever_its_bytes(small_model, ten_digits, tmp_path):
    names = [b"plain.png", b"latin1-\xe9t\xe9.png", b"two\nlines.png", b"\x1b[2Jclear.png", b"tab\there.png"]
    for name in names:
        Image.fromarray(ten_digits[0][3]).save(os.path.join(os.fsencode(tmp_path), name))
    for encoding in ("utf-8", "ascii"):
        result = predict("--model", small_model, tmp_path, env={"PYTHONIOENCODING": encoding})
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == len(names) and all(": 3 " in line for line in lines), lines
        shown = sorted(line.split(": 3 ")[0].removeprefix(f"{tmp_path}/") for line in lines)
        assert shown == sorted(["plain.png", "latin1-\\xe9t\\xe9.png", "two\\nlines.png", "\\x1b[2Jclear.png",
                                "tab\\there.png"])


def test_fifos_and_devices_are_refused_by_type_without_waiting(small_model, ten_digits, tmp_path):
    Image.fromarray(ten_digits[0][3]).save(tmp_path / "good.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    os.mkfifo(tmp_path / "argument-fifo")
    result = predict("--model", small_model, tmp_path / "argument-fifo", tmp_path, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {tmp_path}/argument-fifo: is a FIFO (named pipe), expected an image file",
        f"error: {tmp_path}/loop.png: cannot read (Too many levels of symbolic links)",
        f"error: {tmp_path}/pipe.png: is a FIFO (named pipe), expected an image file",
        f"error: {tmp_path}/zero.png: is a character device, expected an image file",
        "error: 4 of 5 input(s) could not be classified"]
    assert result.stdout.splitlines() == [f"{tmp_path}/good.png: 3    " + result.stdout.split("    ", 1)[1].strip()]


@pytest.mark.slow
def test_doubtful_answers_say_unsure_and_keep_the_exit_code(small_model, ten_digits, tmp_path):
    images, _ = ten_digits
    side_by_side = np.zeros((28, 62), np.uint8)
    side_by_side[:, :28], side_by_side[:, 34:] = images[1], images[2]
    Image.fromarray(255 - side_by_side).save(tmp_path / "twelve.png")
    Image.fromarray(np.array([[0, 255], [255, 255]], np.uint8)).save(tmp_path / "two_by_two.png")
    Image.fromarray(images[4]).save(tmp_path / "four.png")
    records, result = predict_json("--model", small_model, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 digit-sized marks side by side" in records["twelve.png"]["unsure"]
    assert records["two_by_two.png"]["unsure"].startswith("the image is only 2x2 pixels")
    assert records["four.png"]["unsure"] is None and records["four.png"]["digit"] == 4
    text = predict("--model", small_model, tmp_path / "twelve.png", tmp_path / "four.png")
    twelve, four = text.stdout.splitlines()
    assert "    unsure: " in twelve and "unsure" not in four and text.returncode == 0


def test_white_ink_on_a_transparent_background_is_classified(small_model, ten_digits, tmp_path):
    images, labels = ten_digits
    for digit in (0, 7):
        rgba = np.zeros((28, 28, 4), np.uint8)
        rgba[..., :3], rgba[..., 3] = 255, images[digit]  # white everywhere, opaque where the ink is
        Image.fromarray(rgba).resize((140, 140), Image.BICUBIC).save(tmp_path / f"white_{digit}.png")
        rgba[..., :3] = 0
        Image.fromarray(rgba).resize((140, 140), Image.BICUBIC).save(tmp_path / f"black_{digit}.png")
    records, result = predict_json("--model", small_model, tmp_path)
    assert result.returncode == 0, result.stderr
    assert {name: record["digit"] for name, record in records.items()} == {
        "white_0.png": 0, "black_0.png": 0, "white_7.png": 7, "black_7.png": 7}


@pytest.mark.slow
def test_pillows_decompression_bomb_warning_never_shows(small_model, tmp_path):
    (tmp_path / "huge.png").write_bytes(png_header(10_000, 10_000))  # 100 Mpx: above Pillow's 89 Mpx warning
    result = predict("--model", small_model, "--max-pixels", 200_000_000, tmp_path / "huge.png")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "error: 1 of 1 input(s) could not be classified"
    assert len(result.stderr.splitlines()) == 2 and "Warning" not in result.stderr, result.stderr


LOADED_BY_PREDICT = """
import atexit, sys
atexit.register(lambda: print(" ".join(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr))
sys.argv = ["lenet", "predict", *sys.argv[1:]]
from lenet.cli import main
main()
"""


def test_predict_imports_only_what_it_uses(small_model, ten_digits, tmp_path):
    """Issue 17, item 6: no matplotlib, DVC or the other commands before the first prediction."""
    Image.fromarray(ten_digits[0][3]).save(tmp_path / "three.png")
    result = subprocess.run([sys.executable, "-c", LOADED_BY_PREDICT, "--model", str(small_model),
                             str(tmp_path / "three.png")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and ": 3 " in result.stdout, result.stderr
    loaded = set(result.stderr.split())
    assert not loaded & {"matplotlib", "dvc", "scmrepo", "yaml"}, loaded & {"matplotlib", "dvc", "scmrepo", "yaml"}
    assert "lenet" in loaded and "PIL" in loaded
