"""How long from starting ``lenet predict`` to its first prediction, and per page prediction?

    python benchmarks/bench_predict_startup.py [--model models/model.npz] [--runs 10]

1. Start-up, as a user starts it: runs the ``lenet`` console script installed beside this
   Python (``lenet predict --model MODEL digit.png``) as a fresh process ``--runs`` times and
   reports the wall-clock time from launching it to reading its prediction line (interpreter
   start, imports, model load, decoding, preprocessing, inference). The reference, measured
   in the same loop (alternating, so a busy moment slows both): a bare interpreter start
   (``python -c pass``), so the ratio holds on a shared machine. The first run is shown
   apart: with a cold disk cache it is the slowest.
2. The drawing page's server side: ``POST /predict`` of a 280x280 PNG drawing to a
   ``DrawServer`` on 127.0.0.1 (decoding, preprocessing, network, feature maps, JSON), timed
   from the client, ``--runs`` x 5 requests on one keep-alive connection.

The digit is the first MNIST test image (a 7) from the local mirror, enlarged to 280x280,
black on white.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_model  # noqa: E402
from lenet.classifier import Classifier  # noqa: E402
from lenet.serve import DrawServer  # noqa: E402
from tests.small_model import read_mnist  # noqa: E402


def lenet_command() -> list[str]:
    """What a user types: the ``lenet`` script of this environment (else ``python -m lenet.cli``)."""
    script = Path(sys.executable).with_name("lenet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lenet.cli"]


def until_first_line(command: list[str]) -> tuple[float, str]:
    """Seconds from launching ``command`` to its first line of output, and that line."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    seconds = time.perf_counter() - started
    process.wait()
    return seconds, line


def startup(model: Path, image: Path, runs: int) -> tuple[list[float], list[float]]:
    """Start-to-prediction times of ``lenet predict`` and of a bare ``python -c`` start, alternating."""
    predict, bare = [], []
    for _ in range(runs):
        seconds, line = until_first_line([*lenet_command(), "predict", "--model", str(model), str(image)])
        assert ": 7 " in line, line
        predict.append(seconds)
        bare.append(until_first_line([sys.executable, "-c", "print()"])[0])
    return predict, bare


def page(model: Path, body: bytes, runs: int) -> list[float]:
    server = DrawServer(("127.0.0.1", 0), Classifier.load(model))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    connection = http.client.HTTPConnection(*server.server_address[:2])
    times = []
    try:
        for _ in range(runs * 5):
            started = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": "image/png"})
            response = connection.getresponse()
            response.read()
            times.append(time.perf_counter() - started)
            assert response.status == 200
    finally:
        connection.close()
        server.shutdown()
        server.server_close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/model.npz")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    images, _ = read_mnist("t10k", 1)
    buffer = io.BytesIO()
    Image.fromarray(255 - images[0]).resize((280, 280), Image.BICUBIC).save(buffer, format="PNG")
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "seven.png"
        image.write_bytes(buffer.getvalue())
        predict, bare = startup(args.model, image, args.runs)
        print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; command: {' '.join(lenet_command())} predict")
        for name, times in [("lenet predict, start to first prediction", predict),
                            ("python -c, start to first line (reference)", bare),
                            ("page: POST /predict", page(args.model, buffer.getvalue(), args.runs))]:
            ms = np.array(times) * 1000
            print(f"{name}: median {statistics.median(ms):.0f} ms, min {ms.min():.0f} ms, "
                  f"max {ms.max():.0f} ms, first {ms[0]:.0f} ms ({len(ms)} runs)")
        print(f"start to first prediction / bare interpreter start: "
              f"{statistics.median(predict) / statistics.median(bare):.1f}x (medians)")


if __name__ == "__main__":
    main()
