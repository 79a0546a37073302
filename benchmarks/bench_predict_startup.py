"""How long from starting ``lenet predict`` to its first prediction, and per page prediction?

    python benchmarks/bench_predict_startup.py [--model models/model.npz] [--runs 10]

1. Start-up: runs ``python -m lenet.cli predict --model MODEL digit.png`` as a fresh process
   ``--runs`` times and reports the wall-clock time from launching it to reading its
   prediction line (interpreter start, imports, model load, decoding, preprocessing,
   inference). The console script ``lenet predict`` costs the same plus a few ms of
   entry-point lookup.
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

from lenet.classifier import Classifier  # noqa: E402
from lenet.serve import DrawServer  # noqa: E402
from tests.small_model import read_mnist  # noqa: E402


def startup(model: Path, image: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "lenet.cli", "predict", "--model", str(model), str(image)],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = process.stdout.readline()
        times.append(time.perf_counter() - started)
        process.wait()
        assert ": 7 " in line, line
    return times


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
        for name, times in [("start to first prediction", startup(args.model, image, args.runs)),
                            ("page: POST /predict", page(args.model, buffer.getvalue(), args.runs))]:
            ms = np.array(times) * 1000
            print(f"{name}: median {statistics.median(ms):.0f} ms, min {ms.min():.0f} ms, "
                  f"max {ms.max():.0f} ms ({len(ms)} runs)")


if __name__ == "__main__":
    main()
