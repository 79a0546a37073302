"""``lenet serve``: a local web page to draw a digit and watch the network classify it.

The page (``lenet/static/``: plain HTML, CSS and JavaScript, nothing fetched from elsewhere)
sends the drawing as a PNG to ``POST /predict`` while you draw; the server classifies it
with the same code as ``lenet predict`` (:class:`lenet.classifier.Classifier`: decoding,
MNIST-style preprocessing, the model's normalization) and answers with the 28x28 input the
network saw, the ten probabilities and the conv1/conv2 feature maps. The network runs only
here, in Python: the page holds no copy of it.

Served by the standard library's ``ThreadingHTTPServer``: two routes and four static files
need no framework, and nothing new to install. What a local server must still guard, it
does here (:class:`Handler`): the ``Host`` (and ``Origin``) must name this server, so a web
page the user visits cannot reach it by DNS rebinding; requests whose length is ambiguous
are refused and their connection closed; every answer, errors included, is JSON; sockets
time out; at most one prediction per core runs at once. Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

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
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")  # Host names always served (IPv6 without brackets)
HOST = re.compile(r"[A-Za-z0-9.:\[\]-]+")  # a Host header is a name or address and a port, nothing else
SOCKET_TIMEOUT = 30  # seconds a client may take to send a request or read an answer
QUEUE_WAIT = 5  # seconds a prediction waits for a free core before a 503
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() also accepts "²"


def prediction_json(prediction, milliseconds: float) -> dict:
    """What the page draws: digit, probabilities, the 28x28 input and the feature maps.

    The arrays go flat, row-major, with their shapes; values are rounded to keep the answer small.
    """
    maps = {name: {"shape": list(m.shape), "values": [round(float(v), 3) for v in m.ravel()]}
            for name, m in prediction.maps.items()}
    return {"digit": prediction.digit, "probabilities": [float(p) for p in prediction.probabilities],
            "unsure": prediction.unsure,
            "input": {"shape": list(prediction.pixels.shape), "values": prediction.pixels.ravel().tolist()},
            "maps": maps, "milliseconds": round(milliseconds, 2)}


class Handler(BaseHTTPRequestHandler):
    """``GET /`` and ``/static/<file>``; ``POST /predict`` with an image body; JSON errors for the rest."""

    server: "DrawServer"
    protocol_version = "HTTP/1.1"  # keep-alive: the page posts many drawings on one connection
    timeout = SOCKET_TIMEOUT

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _error(self, status: int, message: str, *, close: bool = False, headers: dict | None = None) -> None:
        """A JSON error; ``close`` when the request's body is left unread, so it is never parsed as a request."""
        self.close_connection = self.close_connection or close
        self._json(status, {"error": message}, headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (unknown method, malformed request line or headers), as JSON."""
        self.log_error("code %d, message %s", code, message)
        self._error(code, message or HTTPStatus(code).phrase, close=True)

    def _refused(self) -> bool:
        """Answer and return True unless the request names this server (Host, and Origin when sent)."""
        host = self.headers.get("Host", "")
        if not self.server.serves(host):
            self._error(HTTPStatus.MISDIRECTED_REQUEST, f"this server answers to {self.server.url}, "
                        f"not to Host {host!r}", close=True)
            return True
        origin = self.headers.get("Origin")
        if origin is not None and not self.server.serves(urlsplit(origin).netloc):
            self._error(HTTPStatus.FORBIDDEN, f"requests from pages of {origin} are not served", close=True)
            return True
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if "Content-Length" in self.headers or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # a body is never read here: it must not pass for a request
        if self._refused():
            return
        path = self.path.split("?", 1)[0]
        name = "index.html" if path == "/" else path.removeprefix("/static/")
        # Only the files in lenet/static, by exact name: no path ever reaches the filesystem.
        files = {p.name: p for p in STATIC.iterdir() if p.suffix in CONTENT_TYPES}
        if (path == "/" or path.startswith("/static/")) and name in files:
            self._send(HTTPStatus.OK, files[name].read_bytes(), CONTENT_TYPES[files[name].suffix])
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    do_HEAD = do_GET

    def _body(self) -> bytes | None:
        """The request's body, or None once an error is answered (the connection then closes)."""
        lengths = self.headers.get_all("Content-Length", [])
        if "Transfer-Encoding" in self.headers and lengths:
            self._error(HTTPStatus.BAD_REQUEST, "both Transfer-Encoding and Content-Length: ambiguous", close=True)
        elif not lengths and "Transfer-Encoding" in self.headers:
            self._error(HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length header", close=True)
        elif len(lengths) != 1 or not DIGITS.fullmatch(lengths[0].strip()):
            self._error(HTTPStatus.BAD_REQUEST, f"expected one Content-Length of digits, got {lengths}", close=True)
        elif int(lengths[0]) > MAX_BODY:  # unread: close rather than read megabytes to skip them
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"body is {int(lengths[0]):,} bytes, the limit is {MAX_BODY:,}", close=True)
        else:
            body = self.rfile.read(int(lengths[0]))
            if len(body) == int(lengths[0]):
                return body
            self.close_connection = True  # the client left before sending it all: nobody to answer
        return None

    def do_POST(self) -> None:  # noqa: N802
        if self._refused():
            return
        if self.path.split("?", 1)[0] != "/predict":
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {self.path}", close=True)
            return
        body = self._body()
        if body is None:
            return
        if not self.server.cores.acquire(timeout=QUEUE_WAIT):
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "busy: every core is classifying; try again",
                        headers={"Retry-After": "1"})
            return
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
        except LenetError as error:  # a broken model (NaN): say so, never answer a digit
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(error))
            return
        finally:
            self.server.cores.release()
        self._json(HTTPStatus.OK, prediction_json(prediction, 1000 * (time.perf_counter() - started)))


class DrawServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` holding the classifier its handlers share.

    Attributes
    ----------
    classifier : Classifier
    cores : threading.BoundedSemaphore
        One slot per CPU core: predictions beyond that wait (``QUEUE_WAIT``), then get a 503.
    """

    daemon_threads = True  # an open keep-alive connection must not block shutdown
    request_queue_size = 64  # listen backlog: a burst of connections waits instead of being reset

    def __init__(self, address: tuple[str, int], classifier: Classifier, verbose: bool = False) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler)
        self.classifier, self.verbose = classifier, verbose
        self.cores = threading.BoundedSemaphore(os.cpu_count() or 1)
        host = address[0].lower()
        self.names = {*LOCAL_NAMES, host}
        self.any_address = host in ("", "0.0.0.0", "::")  # on every interface: reached by its IP addresses

    def serves(self, host: str) -> bool:
        """Whether a ``Host`` header (``name[:port]``) names this server.

        A DNS rebinding attack sends a name the attacker controls: only this server's own
        names are accepted, and, when it listens on every interface, IP addresses.
        """
        try:
            parts = urlsplit(f"//{host}")
            name, port = parts.hostname, parts.port
        except ValueError:  # a port that is not a number
            return False
        if not HOST.fullmatch(host) or not name or port not in (None, self.server_address[1]):
            return False
        try:
            return name in self.names or (self.any_address and bool(ipaddress.ip_address(name)))
        except ValueError:  # a name, not an address
            return False

    def get_request(self):
        try:
            return super().get_request()
        except OSError as error:
            if error.errno in OUT_OF_DESCRIPTORS:  # the socket stays readable: pause, don't spin
                time.sleep(0.1)
            raise

    def handle_error(self, request, client_address) -> None:
        """A client that left or stalled is no error of ours: one line, and only with --verbose."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            if self.verbose:
                print(f"{client_address[0]}: {type(error).__name__}: {error}", file=sys.stderr)
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


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
