"""``docs/walkthrough.py`` runs as a plain script, and is a notebook in jupytext's percent format.

The walkthrough asserts every equality it prints (loops = fast layers, gradients = finite
differences, the report's slips shown wrong), so running it here keeps the lesson true as
``nn/`` changes. jupytext is not a dependency: the percent format's rules are checked here.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from tests.mnist_mirror import MIRROR, ROOT, needs_mirror

WALKTHROUGH = ROOT / "docs" / "walkthrough.py"
MARKDOWN, CODE = "# %% [markdown]", "# %%"
# The report's section 4, in its order, with its own titles.
SECTIONS = ("4.1 激活函数", "4.2 卷积层", "4.3 池化层", "4.4 线性层", "4.5 输出层", "4.6 网络构建",
            "4.7 主程序")
# Self-contained: the library, NumPy, matplotlib and the standard library only.
ALLOWED_IMPORTS = {"nn", "numpy", "matplotlib", "gzip", "os", "pathlib"}


def percent_cells(text: str) -> list[tuple[str, list[str]]]:
    """``[(kind, lines), ...]`` of a percent-format script, kind "markdown" or "code".

    Raises
    ------
    ValueError
        Naming the line, where the text breaks the format: an unclosed ``# ---`` header or a
        header line that is not a comment, text before the first cell, a cell marker other
        than ``# %%`` and ``# %% [markdown]``, a markdown line that is not a comment.
    """
    lines = text.splitlines()
    start = 0
    if lines and lines[0] == "# ---":  # jupytext's header: comment lines up to the next "# ---"
        try:
            start = lines.index("# ---", 1) + 1
        except ValueError:
            raise ValueError("line 1: the '# ---' header is never closed") from None
        for number, line in enumerate(lines[1:start - 1], start=2):
            if not line.startswith("#"):
                raise ValueError(f"line {number}: header line is not a comment: {line!r}")
    cells: list[tuple[str, list[str]]] = []
    for number, line in enumerate(lines[start:], start=start + 1):
        if re.match(r"#\s*%%", line):
            if line not in (MARKDOWN, CODE):
                raise ValueError(f"line {number}: unknown cell marker {line!r}")
            cells.append(("markdown" if line == MARKDOWN else "code", []))
        elif not cells:
            if line.strip():
                raise ValueError(f"line {number}: text before the first cell marker: {line!r}")
        else:
            kind, body = cells[-1]
            if kind == "markdown" and line.strip() and not (line == "#" or line.startswith("# ")):
                raise ValueError(f"line {number}: markdown cell line is not a '# ' comment: {line!r}")
            body.append(line)
    return cells


@pytest.fixture(scope="module")
def cells() -> list[tuple[str, list[str]]]:
    return percent_cells(WALKTHROUGH.read_text(encoding="utf-8"))


def markdown_text(cells) -> str:
    return "\n".join(line[2:] for kind, body in cells if kind == "markdown" for line in body)


def test_is_percent_format_with_code_that_compiles(cells):
    kinds = [kind for kind, _ in cells]
    assert kinds.count("markdown") >= len(SECTIONS) and kinds.count("code") >= len(SECTIONS)
    for index, (kind, body) in enumerate(cells):
        assert any(line.strip() for line in body), f"cell {index} is empty"
        if kind == "code":
            ast.parse("\n".join(body), filename=f"{WALKTHROUGH.name}, cell {index}")


@pytest.mark.parametrize("text, problem", [
    ("x = 1\n# %%\n", "text before the first cell marker"),
    ("# %% [markdown]\n# fine\nx = 1\n", "markdown cell line is not"),
    ("#%%\nx = 1\n", "unknown cell marker"),
    ("# %% [md]\n# text\n", "unknown cell marker"),
    ("# ---\n# jupyter:\n# %%\n", "never closed"),
])
def test_the_format_check_rejects_broken_files(text, problem):
    with pytest.raises(ValueError, match=problem):
        percent_cells(text)


def test_follows_the_reports_section_4_in_order_and_in_both_languages(cells):
    headings = [line[2:] for kind, body in cells if kind == "markdown" for line in body
                if line.startswith("# ## ")]
    numbered = [heading[3:] for heading in headings if re.match(r"## 4\.\d ", heading)]
    assert [heading.split(" / ")[0] for heading in numbered] == list(SECTIONS)
    for heading in numbered:
        english = heading.split(" / ", 1)[1]
        assert re.match(r"[A-Z][a-z]", english), f"{heading!r}: no English name after ' / '"


def test_says_how_to_open_it_as_a_notebook(cells):
    first_kind, first_body = cells[0]
    assert first_kind == "markdown"
    intro = "\n".join(first_body)
    assert "jupytext --to notebook docs/walkthrough.py" in intro
    assert "Run Cell" in intro and "python docs/walkthrough.py" in intro


def test_imports_only_nn_numpy_matplotlib_and_the_standard_library():
    tree = ast.parse(WALKTHROUGH.read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= ALLOWED_IMPORTS, sorted(imported - ALLOWED_IMPORTS)


@needs_mirror
def test_runs_as_a_script_and_draws_the_feature_maps(tmp_path):
    env = {**os.environ, "MNIST_MIRROR": str(MIRROR), "WALKTHROUGH_OUT": str(tmp_path),
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(WALKTHROUGH)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # The script asserts each comparison it prints; a zero exit means they all held. These
    # lines show that every section ran.
    for line in ("Tanh: x 2×3×4×4 -> y 2×3×4×4", "floor((7 + 2·1 - 3) / 2) + 1 = 4",
                 "dW: x correlated with dilated dJ/dy vs layer", "forward: im2col + one product vs layer",
                 "average pooling 2×2, stride 2", "the report's dJ/dW = x^T dJ/dy vs our dW^T",
                 "the report's p - a = the 'sum' reduction", "fc3.bias: loops vs fast",
                 "conv1.weight vs finite differences"):
        assert line in out, f"{line!r} missing from the output:\n{out}"
    assert out.count("(wrong)") == 2 and re.search(r"every-maximum rule: +15\.0 +\(too much\)", out)
    epochs = re.findall(r"epoch (\d)/2: loss ([\d.]+), training accuracy", out)
    assert [epoch for epoch, _ in epochs] == ["1", "2"] and float(epochs[1][1]) < float(epochs[0][1])
    accuracy = float(re.search(r"test accuracy: ([\d.]+)% on 10000 test images", out).group(1))
    assert accuracy > 75.0, out  # 83-93% over four seeds of the weights; chance is 10%
    with Image.open(tmp_path / "walkthrough_conv1_maps.png") as picture:
        assert picture.format == "PNG" and picture.size == (700, 420)
