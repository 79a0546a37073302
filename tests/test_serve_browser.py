"""The drawing page in a real headless browser: draw a 7, clear, draw a 0; read the answers.

Debian's ``chromium`` (``apt-get install chromium``) driven by Playwright's Python package
(the ``test`` extra) pointed at the system browser: no browser download. Skipped, with the
reason, when either is missing. ``LENET_SCREENSHOT=docs/draw.png`` also saves a screenshot.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from pathlib import Path

import pytest

from lenet.classifier import Classifier
from lenet.serve import DrawServer
from tests.small_model import small_model  # noqa: F401 (a fixture)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="playwright is not installed (pip install -e '.[test]')")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM} (apt-get install chromium)"),
]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

# Strokes on the 280x280 pad, in pad pixels: a 7 (top bar, then the diagonal) and a 0 (an ellipse).
SEVEN = [[(80, 60), (200, 60), (190, 90), (150, 160), (120, 240)]]
ZERO = [[(140 + 55 * math.sin(t / 20 * math.tau), 140 - 90 * math.cos(t / 20 * math.tau)) for t in range(21)]]


@pytest.fixture(scope="module")
def page_url(small_model):
    server = DrawServer(("127.0.0.1", 0), Classifier.load(small_model))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.url
    server.shutdown()
    server.server_close()


def draw(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=4)
        page.mouse.up()


def shown_prediction(page) -> str:
    """The digit on the page once every request sent while drawing has been answered."""
    # Locators, not wait_for_function: the page's Content-Security-Policy forbids eval.
    page.locator("body[data-busy='0']").wait_for(timeout=30_000)
    return page.locator("#prediction").text_content()


def test_draw_a_seven_then_a_zero(page_url, tmp_path):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 760, "height": 700})
        try:
            page = browser.new_page()
            failed = []
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.goto(page_url)
            draw(page, SEVEN)
            assert shown_prediction(page) == "7"
            assert page.locator("#conv1 canvas").count() == 8 and page.locator("#conv2 canvas").count() == 24
            assert page.locator(".bar.best").count() == 1
            assert "ms per prediction" in page.locator("#status").text_content()
            if os.environ.get("LENET_SCREENSHOT"):
                page.screenshot(path=os.environ["LENET_SCREENSHOT"], full_page=True)
            page.click("#clear")
            assert page.locator("#prediction").text_content() == "–"
            assert page.locator("#conv1 canvas").count() == 0
            draw(page, ZERO)
            assert shown_prediction(page) == "0"
            assert failed == []
        finally:
            browser.close()
