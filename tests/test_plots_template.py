"""The offline plots page template: where DVC finds it, and that it needs no network."""

import configparser
import re
from pathlib import Path

from dvc_render.html import HTML

ROOT = Path(__file__).resolve().parents[1]


def template_path() -> Path:
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc/config")
    # DVC resolves a relative plots.html_template against the .dvc directory.
    return (ROOT / ".dvc" / config["plots"]["html_template"]).resolve()


def test_dvc_config_names_the_vendored_template():
    assert template_path() == ROOT / "vendor/vega/template.html"


def test_template_inlines_the_pinned_libraries_and_loads_nothing():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build", ROOT / "vendor/vega/build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    text = template_path().read_text(encoding="utf-8")
    libraries = re.findall(r'<script data-lib="([^"]+)">', text)
    assert libraries == [f"{name}@{version}" for name, (version, _, _) in build.PINS.items()]
    assert not re.search(r"<script[^>]*\bsrc=", text) and "<link" not in text
    assert "{scripts}" not in text  # where DVC would put its CDN <script> tags
    page = HTML(text).with_scripts('<script src="https://cdn.example/vega.js"></script>')
    page.with_element('<div id="x"></div>')
    html = page.embed()
    assert '<div id="x"></div>' in html and "cdn.example" not in html
