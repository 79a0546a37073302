"""``dvc plots show`` and ``dvc plots diff`` pages draw every figure offline, in Chromium.

A scratch copy of the repository runs the pipeline on a small MNIST subset, then DVC writes
its plots pages with the project's template (``.dvc/config``: ``plots.html_template``).
Headless Chromium loads each page with every request except ``file://`` aborted, and each
declared figure must be on the page exactly once and drawn: a Vega chart with marks in its
SVG, a PNG decoded to a non-blank image.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package (the
``test`` extra); skipped, visibly, without them or without a local MNIST mirror.
"""

import os
from pathlib import Path

import pytest

from tests.mnist_mirror import needs_mirror
from tests.test_pipeline import ROOT, SMALL, sh
from tests.params_file import set_params
from tests.scratch_project import commit_all, copy_project, init_repo

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

pytestmark = [
    pytest.mark.slow,
    needs_mirror,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.skipif(sync_playwright is None, reason="playwright not installed (pip install -e '.[test]')"),
]

SCREENSHOT = os.environ.get("PLOTS_SCREENSHOT")  # e.g. docs/plots.png: where to save the page

# Records what each vegaEmbed call returns (the page's own calls, options untouched), so
# the test can read each chart's scenegraph once it has rendered.
RECORD_EMBEDS = """
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
window.__embeds = [];
let embed;
Object.defineProperty(window, 'vegaEmbed', {
  configurable: true,
  get() { return embed; },
  set(real) {
    embed = Object.assign((el, spec, opt) => {
      const result = real(el, spec, opt);
      window.__embeds.push({id: el.replace('#', ''), result: result});
      return result;
    }, real);
  },
});
"""

# Per chart: the data marks in its scenegraph (line, rect, symbol items: not axes or
# legends) and the inked pixels of its canvas. Per image: decoded size and distinct colours.
DRAWN = """async () => {
  const marks = node => {
    let n = 0;
    if (node.marktype && node.role === 'mark' && ['line', 'rect', 'symbol', 'area'].includes(node.marktype))
      n += node.items.length;
    for (const child of node.items || []) n += marks(child);
    return n;
  };
  const charts = [];
  for (const {id, result} of window.__embeds) {
    const {view} = await result;
    const canvas = document.getElementById(id).querySelector('canvas');
    let inked = 0;
    if (canvas) {
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 0 && data[i] + data[i + 1] + data[i + 2] < 600) inked++;
    }
    charts.push({id: id, marks: marks(view.scenegraph().root), inked: inked});
  }
  const images = [...document.querySelectorAll('img')].map(img => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const seen = new Set();
    if (img.complete && img.naturalWidth) {
      const context = canvas.getContext('2d');
      context.drawImage(img, 0, 0);
      const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 0; i < data.length && seen.size < 3; i += 4 * 97) seen.add(data[i] * 65536 + data[i + 1] * 256 + data[i + 2]);
    }
    return {src: img.getAttribute('src'), width: img.naturalWidth, distinct: seen.size};
  });
  return {charts: charts, images: images, errors: window.__errors};
}"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git + DVC copy of the project, run twice on the small subset (lr 0.02, then 0.01)."""
    root = tmp_path_factory.mktemp("plots_repo")
    copy_project(root)
    set_params(root, SMALL)
    init_repo(root)
    sh(root, "dvc", "repro")
    commit_all(root, "baseline")
    set_params(root, {"train.lr": 0.01})
    sh(root, "dvc", "repro")
    return root


def declared_figures(root: Path) -> tuple[list[str], list[str]]:
    """(titles of the Vega plots, paths of the images) in dvc.yaml's top-level plots."""
    from ruamel.yaml import YAML

    plots = YAML(typ="safe").load((root / "dvc.yaml").read_text())["plots"]
    vega = [next(iter(entry)) for entry in plots if isinstance(entry, dict)]
    images = [entry for entry in plots if isinstance(entry, str)]
    return vega, images


def render(page: Path, screenshot: Path | None = None) -> dict:
    """Load ``page`` in headless Chromium with the network cut off; what each chart drew."""
    blocked = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            user_data_dir=str(page.parent / ".chromium-profile"), executable_path=str(CHROMIUM),
            headless=True, viewport={"width": 1400, "height": 900},
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  # file:// pages are opaque origins: without this, reading back an image's
                  # pixels from a canvas (the blank check) is refused as cross-origin.
                  "--allow-file-access-from-files"])
        try:
            def route(request_route):
                if request_route.request.url.startswith("file://"):
                    request_route.continue_()
                else:
                    blocked.append(request_route.request.url)
                    request_route.abort()

            browser.route("**/*", route)
            tab = browser.new_page()
            tab.add_init_script(RECORD_EMBEDS)
            tab.goto(page.as_uri(), wait_until="load")
            result = tab.evaluate(DRAWN)  # awaits every chart's rendering
            if screenshot:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                tab.screenshot(path=str(screenshot), full_page=False)
        finally:
            browser.close()
    result["blocked"] = blocked
    return result


def check_page(result: dict, vega: list[str], images: list[str], revisions: int) -> None:
    assert result["errors"] == [], result["errors"]
    assert result["blocked"] == [], f"the page asked the network for {result['blocked']}"
    ids = [chart["id"] for chart in result["charts"]]  # dvc-render: the plot's name, "_" for " "
    assert sorted(ids) == sorted(name.replace(" ", "_") for name in vega), f"charts {ids}, declared {vega}"
    for chart in result["charts"]:
        assert chart["marks"] > 0, f"chart {chart['id']} has no data marks"
        assert chart["inked"] > 1000, f"chart {chart['id']} left its canvas blank"
    # An image plot shows one <img> per revision; each PNG once per revision, no duplicates.
    assert len(result["images"]) == len(images) * revisions, result["images"]
    for image in result["images"]:
        assert image["width"] > 0 and image["distinct"] > 1, f"image {image['src']} is blank"


def test_plots_show_draws_every_figure_once_offline(repo, tmp_path):
    sh(repo, "dvc", "plots", "show", "-o", str(tmp_path / "show"))
    page = tmp_path / "show" / "index.html"
    html = page.read_text()
    assert "cdn.jsdelivr" not in html and "<script src" not in html
    vega, images = declared_figures(repo)
    shot = (ROOT / SCREENSHOT) if SCREENSHOT else None
    check_page(render(page, shot), vega, images, revisions=1)


def test_plots_diff_draws_both_revisions_offline(repo, tmp_path):
    sh(repo, "dvc", "plots", "diff", "HEAD", "-o", str(tmp_path / "diff"))
    page = tmp_path / "diff" / "index.html"
    vega, images = declared_figures(repo)
    result = render(page)
    check_page(result, vega, images, revisions=2)
    # Both revisions' curves are drawn in the loss chart: the workspace and HEAD.
    assert "HEAD" in page.read_text() and "workspace" in page.read_text()
