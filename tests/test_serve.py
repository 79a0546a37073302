"""``lenet serve``'s HTTP side, with urllib: pages, predictions, and 4xx for bad requests."""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lenet.classifier import Classifier
from lenet.serve import MAX_BODY, STATIC, DrawServer, Handler
from tests.small_model import read_mnist, small_model  # noqa: F401 (a fixture)
from tests.image_files import png_header

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(small_model):
    server = DrawServer(("127.0.0.1", 0), Classifier.load(small_model))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def request(server, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one request; 4xx/5xx are returned, not raised."""
    req = urllib.request.Request(server.url.rstrip("/") + path, data=body, headers=headers or {},
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_page_and_its_assets_come_from_the_server_only(server):
    status, headers, body = request(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == "default-src 'self'"
    page = body.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(assets) == ["/static/draw.css", "/static/draw.js"]
    for asset in assets:
        status, _, content = request(server, asset)
        assert status == 200 and content == (STATIC / asset.rsplit("/", 1)[1]).read_bytes()
    for path in STATIC.iterdir():  # nothing fetched from elsewhere: no CDN, no remote font
        assert not re.search(r"https?://|//[a-z]", path.read_text()), path


@pytest.mark.parametrize("path", ["/nope", "/static/nope.js", "/static/../serve.py", "/static/%2e%2e/serve.py"])
def test_unknown_paths_are_404(server, path):
    status, _, body = request(server, path)
    assert status == 404 and "no such page" in json.loads(body)["error"]


def test_a_drawing_is_classified_with_its_input_and_feature_maps(server):
    images, labels = read_mnist("t10k", 1)
    drawing = np.asarray(Image.fromarray(255 - images[0]).resize((280, 280), Image.BICUBIC))
    status, headers, body = request(server, "/predict", png(drawing), {"Content-Type": "image/png"})
    assert status == 200 and headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert answer["digit"] == labels[0] == 7
    assert len(answer["probabilities"]) == 10 and sum(answer["probabilities"]) == pytest.approx(1)
    assert answer["input"]["shape"] == [28, 28] and len(answer["input"]["values"]) == 784
    expected = server.classifier.classify(drawing, with_maps=True)  # the very code predict runs
    assert answer["input"]["values"] == expected.pixels.ravel().tolist()
    assert answer["maps"]["conv1"]["shape"] == [8, 28, 28] and answer["maps"]["conv2"]["shape"] == [24, 10, 10]
    np.testing.assert_allclose(answer["maps"]["conv2"]["values"], expected.maps["conv2"].ravel(), atol=5e-4)
    assert answer["milliseconds"] > 0


@pytest.mark.parametrize("body, status, message", [
    (b"not an image at all", 400, "not an image"),
    (b"", 400, "empty"),
    (png_header(4000, 4000), 400, "more than the limit of 4,194,304"),  # wrong shape: far too big
    (png(np.full((50, 50), 255, np.uint8)), 422, "no digit"),  # blank
])
def test_bad_bodies_get_a_4xx_with_a_message_and_the_server_keeps_serving(server, body, status, message):
    got, _, answer = request(server, "/predict", body, {"Content-Type": "image/png"})
    assert got == status and message in json.loads(answer)["error"]
    assert request(server, "/")[0] == 200


def test_an_oversized_body_is_refused_unread(server):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Length", str(MAX_BODY + 1))
    connection.endheaders()  # no body is sent: the answer must come from the header alone
    response = connection.getresponse()
    assert response.status == 413 and "limit" in json.loads(response.read())["error"]
    connection.close()
    assert request(server, "/")[0] == 200


def test_a_missing_length_and_a_wrong_endpoint(server):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    connection.putrequest("POST", "/predict")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]
    connection.close()
    assert request(server, "/train", b"x")[0] == 404
    assert request(server, "/")[0] == 200


# --- issue 17, item 5: a local server that behaves like one ------------------------------


def raw(server, data: bytes, timeout: float = 10) -> tuple[bytes, bool]:
    """Send ``data`` on a fresh connection; (everything answered, whether the server closed it)."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as connection:
        connection.sendall(data)
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
        return received, True


def answers(received: bytes) -> list[tuple[int, dict]]:
    """The (status, JSON body) of each response in ``received``."""
    parsed = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head)[1])
        assert b"Content-Type: application/json" in head, head
        parsed.append((int(head.split()[1]), json.loads(rest[:length])))
        received = rest[length:]
    return parsed


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("LOCALHOST:{port}", 200), ("[::1]:{port}", 200),
    ("evil.example:{port}", 421), ("127.0.0.1.evil.example:{port}", 421), ("127.0.0.1:1", 421), ("", 421),
    ("127.0.0.1:{port}@evil.example", 421),
])
def test_only_requests_naming_this_server_are_answered(server, host, status):
    """A page that rebinds its own name to 127.0.0.1 still sends its name as Host: 421."""
    got, _, body = request(server, "/", headers={"Host": host.format(port=server.server_address[1])})
    assert got == status
    if status != 200:
        assert "this server answers to http://127.0.0.1:" in json.loads(body)["error"]


def test_a_post_from_another_sites_page_is_refused(server):
    origin = {"Origin": "http://evil.example", "Content-Type": "text/plain"}  # a "simple" cross-site request
    got, _, body = request(server, "/predict", png(np.zeros((28, 28), np.uint8)), origin)
    assert got == 403 and "evil.example" in json.loads(body)["error"]
    own = f"http://127.0.0.1:{server.server_address[1]}"
    assert request(server, "/predict", png(np.eye(28, dtype=np.uint8) * 255), {"Origin": own})[0] == 200


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "PUT", "DELETE", "PATCH", "BREW"])
def test_every_method_gets_a_json_answer(server, method):
    received, closed = raw(server, f"{method} / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert answers(received) == [(501, {"error": f"Unsupported method ('{method}')"})] and closed


@pytest.mark.parametrize("headers, problem", [
    ("Content-Length: \u00b2", "Content-Length of digits"),   # str.isdigit() says yes; int() says no
    ("Content-Length: -1", "Content-Length of digits"),
    ("Content-Length: 4\r\nContent-Length: 4", "Content-Length of digits"),
    ("Content-Length: 4\r\nTransfer-Encoding: chunked", "ambiguous"),
])
def test_ambiguous_or_malformed_lengths_are_400_and_the_connection_closes(server, headers, problem):
    smuggled = b"GET /static/draw.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n\r\n".encode("utf-8")
    received, closed = raw(server, head + b"\x89PN" + smuggled)
    (status, body), = answers(received)  # one answer: the smuggled request is never read
    assert status == 400 and problem in body["error"] and closed


def test_the_body_of_a_post_to_an_unknown_path_is_never_read_as_a_request(server):
    smuggled = b"GET /static/draw.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    head = f"POST /train HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode()
    received, closed = raw(server, head + smuggled)
    assert [status for status, _ in answers(received)] == [404] and closed


@pytest.mark.slow
def test_a_client_that_stops_sending_is_dropped_after_the_timeout_quietly(small_model, monkeypatch, capfd):
    monkeypatch.setattr(Handler, "timeout", 0.5)
    server = DrawServer(("127.0.0.1", 0), Classifier.load(small_model))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.perf_counter()
        received, closed = raw(server, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nab")
        assert received == b"" and closed and time.perf_counter() - started < 5
        with socket.create_connection(server.server_address[:2]) as connection:  # leaves mid-request
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nab")
        time.sleep(1)
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capfd.readouterr().err


def test_fifty_simultaneous_requests_are_all_answered(server):
    assert server.request_queue_size == 64
    drawing = png(np.asarray(Image.fromarray(255 - read_mnist("t10k", 1)[0][0]).resize((280, 280))))
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda _: request(server, "/predict", drawing)[0], range(50)))
    assert statuses == [200] * 50


def test_predictions_beyond_the_cores_wait_then_get_503(server, monkeypatch):
    monkeypatch.setattr("lenet.serve.QUEUE_WAIT", 0.2)
    monkeypatch.setattr(server, "cores", threading.BoundedSemaphore(1))
    server.cores.acquire()  # the one core is busy
    try:
        got, headers, body = request(server, "/predict", png(np.eye(28, dtype=np.uint8) * 255))
    finally:
        server.cores.release()
    assert got == 503 and headers["Retry-After"] == "1" and "busy" in json.loads(body)["error"]
    assert request(server, "/predict", png(np.eye(28, dtype=np.uint8) * 255))[0] == 200


SERVE_AT_THE_FILE_LIMIT = """
import resource, sys
from lenet.cli import main
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
sys.argv = ["lenet", "serve", "--model", sys.argv[1], "--port", "0"]
main()
"""


@pytest.mark.slow
def test_at_the_open_file_limit_the_server_waits_instead_of_spinning(small_model):
    server = subprocess.Popen([sys.executable, "-c", SERVE_AT_THE_FILE_LIMIT, str(small_model)], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True)
    connections = []
    try:
        host, port = re.search(r"http://([\d.]+):(\d+)/", server.stderr.readline()).groups()
        for _ in range(80):  # more than its 64 descriptors: the last ones wait in the backlog
            connections.append(socket.create_connection((host, int(port)), timeout=10))
        time.sleep(0.5)
        before = cpu_seconds(server.pid)
        time.sleep(2)
        busy = cpu_seconds(server.pid) - before
        for connection in connections[:30]:  # descriptors come back: the rest are served
            connection.close()
        connections[-1].sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert connections[-1].recv(12) == b"HTTP/1.1 200"
    finally:
        for connection in connections:
            connection.close()
        server.terminate()
        server.wait(timeout=30)
    assert busy < 0.5, f"{busy:.2f} s of CPU in 2 s with every descriptor in use"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_broken_model_is_a_500_naming_it_never_a_digit(server, monkeypatch):
    weights = server.classifier.model.fc3.params["weight"]
    monkeypatch.setitem(server.classifier.model.fc3.params, "weight", np.full_like(weights, np.inf))
    got, _, body = request(server, "/predict", png(np.eye(28, dtype=np.uint8) * 255))
    assert got == 500 and "probabilities are NaN" in json.loads(body)["error"]
