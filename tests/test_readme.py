"""The READMEs are the front doors: short, and every file, function, link and command they name exists.

README.zh-CN.md is the Chinese door: its map of the tutorial has the English rows and its code
blocks are copies of the English ones, so the two pages cannot drift apart.
"""

import ast
import re
from pathlib import Path

import pytest
import typer.main

from lenet.cli import build_app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_ZH = ROOT / "README.zh-CN.md"
PAGES = [README, README_ZH, *sorted((ROOT / "docs").glob("*.md"))]
MAX_LINES = {README: 300, README_ZH: 150}  # the Chinese page leads to the English docs for the rest


def text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def code_blocks(page: Path) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text(page), flags=re.S | re.M)


def defines(path: Path, name: str) -> bool:
    """Whether ``path`` defines ``name`` at its top level (a function, class or constant)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return True
    return False


def tutorial_map(page: Path) -> list[tuple[str, list[str]]]:
    """The rows of a page's map of the tutorial: each row's section numbers and its code cells."""
    rows = re.findall(r"^\| *([\d.]+(?:, [\d.]+)*) [^|]*\|(.*)\| *$", text(page), flags=re.M)
    return [(sections, [cell.strip() for cell in code.split("|")]) for sections, code in rows]


@pytest.mark.parametrize("page", MAX_LINES, ids=lambda p: p.name)
def test_the_readme_leads_and_stops(page):
    assert len(text(page).splitlines()) <= MAX_LINES[page]


@pytest.mark.parametrize("page", [README, README_ZH], ids=lambda p: p.name)
def test_the_map_of_the_tutorial_names_code_that_exists(page):
    cells = re.findall(r"`([\w/]+\.py):(\w+)`", text(page))
    assert len(cells) >= 15
    for path, name in cells:
        assert (ROOT / path).is_file() and defines(ROOT / path, name), f"{page.name}: {path}:{name}"


def test_the_chinese_map_has_the_english_rows():
    english = tutorial_map(README)
    assert len(english) >= 11 and all(code[0] for _, code in english)
    assert tutorial_map(README_ZH) == english


def test_the_chinese_readme_shows_only_the_english_code_blocks():
    """Each block verbatim, not the same list: the Chinese page is shorter and links for the rest."""
    chinese, english = code_blocks(README_ZH), code_blocks(README)
    assert len(chinese) >= 3
    for block in chinese:
        assert block in english, f"README.zh-CN.md: a block README.md does not have:\n{block}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_a_page_names_exists(page):
    named = re.findall(r"`((?:nn|stages|lenet|docs|tests|benchmarks|vendor|\.github|\.ci|\.dvc)/[\w./-]*)`", text(page))
    for path in named:
        assert (ROOT / path.rstrip("/")).exists(), f"{page.name}: {path}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_of_a_page_leads_somewhere(page):
    for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", text(page)):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.name}: {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_a_page_shows_exists(page):
    subcommands = set(typer.main.get_command(build_app()).commands)
    for block in code_blocks(page):
        for line in block.splitlines():
            line = line.removeprefix("$ ").strip()
            if line.startswith("lenet "):
                assert line.split()[1] in subcommands, f"{page.name}: {line}"
            module = re.match(r"python -m ([\w.]+)", line)
            if module and module.group(1) not in ("pytest", "pip", "venv", "tests.s3_server"):
                path = ROOT / module.group(1).replace(".", "/")
                assert path.with_suffix(".py").exists() or (path / "__main__.py").exists(), line
            script = re.match(r"python ([\w/]+\.py)", line)
            if script:
                assert (ROOT / script.group(1)).exists(), line
