"""``lenet serve``: a local web page to draw a digit and watch the network classify it.

The page (``lenet/static/``: plain HTML, CSS and JavaScript, nothing fetched from elsewhere)
sends the drawing as a PNG to ``POST /predict`` while you draw; the server classifies it
with the same code as ``lenet predict`` (:class:`lenet.classifier.Classifier`: decoding,
MNIST-style preprocessing, the model's normalization) and answers with the 28x28 input the
network saw, the ten probabilities and the conv1/conv2 feature maps. The network runs only
here, in Python: the page holds no copy of it.

Served by the standard library's ``ThreadingHTTPServer``: two routes and four static files
need no framework, and nothing new to install. Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import typer

from lenet.classifier import DEFAULT_MODEL, Classifier
from lenet.images import ImageError, decode
from lenet.preprocess import NoDigit
from stages.common.errors import LenetError

STATIC = Path(__file__).with_name("static")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".ico": "image/x-icon"}
MAX_BODY = 2_000_000  # bytes: a 280x280 drawing is ~10 kB as PNG
MAX_PIXELS = 2048 * 2048  # an upload larger than this is not a drawing from the page
# Everything from this server, nothing from anywhere else (no CDN, no inline script).
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'", "X-Content-Type-Options": "nosniff"}


def prediction_json(prediction, milliseconds: float) -> dict:
    """What the page draws: digit, probabilities, the 28x28 input and the feature maps.

    The arrays go flat, row-major, with their shapes; values are rounded to keep the answer small.
    """
    maps = {name: {"shape": list(m.shape), "values": [round(float(v), 3) for v in m.ravel()]}
            for name, m in prediction.maps.items()}
    return {"digit": prediction.digit, "probabilities": [float(p) for p in prediction.probabilities],
            "input": {"shape": list(prediction.pixels.shape), "values": prediction.pixels.ravel().tolist()},
            "maps": maps, "milliseconds": round(milliseconds, 2)}


class Handler(BaseHTTPRequestHandler):
    """``GET /`` and ``/static/<file>``; ``POST /predict`` with an image body."""

    server: "DrawServer"
    protocol_version = "HTTP/1.1"  # keep-alive: the page posts many drawings on one connection

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        name = "index.html" if path == "/" else path.removeprefix("/static/")
        # Only the files in lenet/static, by exact name: no path ever reaches the filesystem.
        files = {p.name: p for p in STATIC.iterdir() if p.suffix in CONTENT_TYPES}
        if (path == "/" or path.startswith("/static/")) and name in files:
            self._send(HTTPStatus.OK, files[name].read_bytes(), CONTENT_TYPES[files[name].suffix])
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/predict":
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {self.path}")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._error(HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length header")
            return
        if int(length) > MAX_BODY:
            # Unread body: close the connection rather than read megabytes to skip them.
            self.close_connection = True
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"body is {int(length):,} bytes, the limit is {MAX_BODY:,}")
            return
        body = self.rfile.read(int(length))
        started = time.perf_counter()
        try:
            prediction = self.server.classifier.classify(decode(body, MAX_PIXELS), with_maps=True)
        except ImageError as error:
            self._error(HTTPStatus.BAD_REQUEST,
                        f"expected a PNG or JPEG image of at most {MAX_PIXELS:,} pixels: {error}")
            return
        except NoDigit as error:
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(error))
            return
        self._json(HTTPStatus.OK, prediction_json(prediction, 1000 * (time.perf_counter() - started)))


class DrawServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` holding the classifier its handlers share."""

    daemon_threads = True  # an open keep-alive connection must not block shutdown

    def __init__(self, address: tuple[str, int], classifier: Classifier, verbose: bool = False) -> None:
        super().__init__(address, Handler)
        self.classifier, self.verbose = classifier, verbose

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def main(
    model: Path = typer.Option(DEFAULT_MODEL, "--model",
                               help="The weights; model.json and preprocessing.json beside them."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    verbose: bool = typer.Option(False, "--verbose", help="Log every request."),
) -> None:
    """Serve a page where you draw a digit and see what the network sees and predicts."""
    classifier = Classifier.load(model)
    try:
        server = DrawServer((host, port), classifier, verbose)
    except OSError as error:
        raise LenetError(f"--host/--port: cannot listen on {host}:{port}: {error.strerror or error}") from None
    print(f"drawing page at {server.url} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
