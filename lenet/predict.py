"""``lenet predict``: classify images of handwritten digits with the trained LeNet-5.

Each image (PNG, JPEG, BMP or GIF; any size, colour or grey, dark ink on light paper or
light ink on dark) is preprocessed the way MNIST was made (:mod:`lenet.preprocess`) and
classified; one line per file gives the digit and the top-3 probabilities (and ``unsure:
<why>`` when the answer should not be trusted), or what is wrong with the file. Bad files do
not stop the others; any bad file makes the exit code 1. A broken model stops the run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from PIL import Image

from lenet.classifier import DEFAULT_MODEL, Classifier, Prediction
from lenet.images import MAX_PIXELS, ImageError, expand, read
from lenet.preprocess import NoDigit
from stages.common.outputs import atomic_write
from stages.common.errors import LenetError


def shown(path: Path) -> str:
    """``path`` as printable text on one line, whatever its bytes.

    Control characters (newlines, terminal escapes) are escaped as ``\\n``, ``\\x1b``;
    bytes that are not UTF-8 appear as ``\\xff``: one file can never split or fake a line.
    """
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _line(path: Path, prediction: Prediction) -> str:
    top = "  ".join(f"{digit}: {p:6.1%}" for digit, p in prediction.top(3))
    unsure = f"    unsure: {prediction.unsure}" if prediction.unsure else ""
    return f"{shown(path)}: {prediction.digit}    ({top}){unsure}"


def _record(path: Path, prediction: Prediction) -> dict:
    return {"file": shown(path), "digit": prediction.digit, "unsure": prediction.unsure,
            "top3": [{"digit": d, "probability": p} for d, p in prediction.top(3)],
            "probabilities": [float(p) for p in prediction.probabilities]}


def _save_input(directory: Path, path: Path, prediction: Prediction, used: set[str]) -> None:
    """Write the 28x28 image the network saw as ``DIR/<file stem>.png`` (``-2``, ... on a clash)."""
    name, n = f"{path.stem}.png", 1
    while name in used:
        n += 1
        name = f"{path.stem}-{n}.png"
    used.add(name)
    with atomic_write(directory / name) as handle:
        Image.fromarray(prediction.pixels, mode="L").save(handle, format="PNG")


def main(
    paths: list[Path] = typer.Argument(..., show_default=False, help="Image files, or directories of them."),
    model: Path = typer.Option(DEFAULT_MODEL, "--model",
                               help="The weights; model.json and preprocessing.json beside them."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print one JSON array: per file, its digit and probabilities, or its error."),
    save_input: Path = typer.Option(None, "--save-input", metavar="DIR",
                                    help="Write the 28x28 image the network saw for each file to DIR."),
    max_pixels: int = typer.Option(MAX_PIXELS, "--max-pixels", min=1,
                                   help="Refuse images with more pixels (checked before decoding)."),
) -> None:
    """Classify images of handwritten digits: the digit and the top-3 probabilities per file."""
    classifier = Classifier.load(model)
    records, failed, used = [], 0, set()
    files = []
    for path in paths:
        found = expand([path])
        if path.is_dir() and not found:
            print(f"error: {shown(path)}: directory holds no .png/.jpg/.jpeg/.bmp/.gif files", file=sys.stderr)
            records.append({"file": shown(path), "error": "directory holds no image files"})
            failed += 1
        files.extend(found)
    for path in files:
        try:
            prediction = classifier.classify(read(path, max_pixels))
        except (ImageError, NoDigit) as error:
            print(f"error: {shown(path)}: {error}", file=sys.stderr)
            records.append({"file": shown(path), "error": str(error)})
            failed += 1
            continue
        if save_input is not None:
            _save_input(save_input, path, prediction, used)
        records.append(_record(path, prediction))
        if not as_json:
            print(_line(path, prediction), flush=True)
    if as_json:
        print(json.dumps(records, indent=2))
    if failed:
        raise LenetError(f"{failed} of {len(records)} input(s) could not be classified")
