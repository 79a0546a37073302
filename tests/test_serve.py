"""``lenet serve``'s HTTP side, with urllib: pages, predictions, and 4xx for bad requests."""

from __future__ import annotations

import http.client
import io
import json
import re
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from lenet.classifier import Classifier
from lenet.serve import MAX_BODY, STATIC, DrawServer
from tests.small_model import read_mnist, small_model  # noqa: F401 (a fixture)
from tests.image_files import png_header


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
