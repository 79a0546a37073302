"""The README is the front door: short, and every file, function, link and command it names exists."""

import ast
import re
from pathlib import Path

import pytest
import typer.main

from lenet.cli import build_app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 300


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


def test_the_readme_leads_and_stops():
    assert len(text(README).splitlines()) <= MAX_README_LINES


def test_the_map_of_the_tutorial_names_code_that_exists():
    cells = re.findall(r"`([\w/]+\.py):(\w+)`", text(README))
    assert len(cells) >= 15
    for path, name in cells:
        assert (ROOT / path).is_file() and defines(ROOT / path, name), f"{path}:{name}"


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
