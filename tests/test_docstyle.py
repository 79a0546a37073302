"""One docstring style, numpydoc, across nn/, stages/ and lenet/ (issue 13 item 5).

Reads every docstring with ``ast`` (module, class, function, method) and fails on the two
other styles the code once mixed in: ``Args`` with a dashed underline, and Google's
``Args:`` / ``Returns:`` headings. An underlined heading must be a numpydoc section (or the
project's ``Shape``), and a public docstring opens with a one-line summary. What ``nn``
exports documents its parameters (and what it returns) in numpydoc sections.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nn", "stages", "lenet")

# Being rewritten on other branches, which convert their docstrings there; remove each entry
# when that branch is merged, so the file is checked like the rest.
EXCLUDED: set[str] = set()

# numpydoc's sections, plus "Shape" (input -> output shapes, as PyTorch documents them).
NUMPYDOC_SECTIONS = {
    "Parameters", "Returns", "Yields", "Receives", "Other Parameters", "Raises", "Warns",
    "Warnings", "See Also", "Notes", "References", "Examples", "Attributes", "Methods",
    "Shape",
}
# Google-style headings: the word alone on its line, then a colon.
GOOGLE_HEADING = re.compile(
    r"^\s*(Args|Arguments|Keyword Args|Keyword Arguments|Parameters|Returns|Return|Yields|"
    r"Raises|Attributes|Example|Examples|Note|Notes|Shape)\s*:\s*$")
UNDERLINE = re.compile(r"^\s*-{3,}\s*$")


def docstring_problems(doc: str) -> list[str]:
    """Each line of ``doc`` written in a style other than numpydoc, with its line number."""
    lines = doc.splitlines()
    problems = []
    for number, line in enumerate(lines, start=1):
        if GOOGLE_HEADING.match(line):
            problems.append(f"line {number}: Google-style heading {line.strip()!r}")
        following = lines[number] if number < len(lines) else ""
        heading = line.strip()
        if heading and UNDERLINE.match(following) and not UNDERLINE.match(line):
            if heading not in NUMPYDOC_SECTIONS:
                problems.append(f"line {number}: {heading!r} underlined, not a numpydoc section")
    return problems


def summary_problem(doc: str) -> str | None:
    """Why ``doc`` does not open with a one-line summary (numpydoc's first line), or None."""
    lines = doc.splitlines()
    if len(lines) > 1 and lines[1].strip():
        return "the summary runs onto a second line (a blank line must follow the first)"
    return None


def is_public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__")) or name == "<module>"


def documented_nodes(tree: ast.Module):
    """(name, line, docstring) of the module and of every class and function in it."""
    if (doc := ast.get_docstring(tree)) is not None:
        yield "<module>", 1, doc
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if (doc := ast.get_docstring(node)) is not None:
                yield node.name, node.lineno, doc


def source_files() -> list[str]:
    return sorted(str(path.relative_to(ROOT)) for package in PACKAGES
                  for path in (ROOT / package).rglob("*.py"))


def sections(doc: str) -> set[str]:
    """The underlined headings of a docstring."""
    lines = [line.strip() for line in doc.splitlines()]
    return {line for line, below in zip(lines, lines[1:]) if line and UNDERLINE.match(below)}


def public_api():
    """(name, object) of everything ``nn`` exports, but for the excluded files' names."""
    import nn

    excluded_modules = {path[:-3].replace("/", ".") for path in EXCLUDED}
    return [(name, getattr(nn, name)) for name in nn.__all__
            if getattr(nn, name).__module__ not in excluded_modules]


@pytest.mark.parametrize("name, obj", public_api(), ids=[name for name, _ in public_api()])
def test_the_public_api_documents_its_parameters(name, obj):
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        arguments = [p for p in inspect.signature(obj.__init__).parameters if p != "self"]
        assert not arguments or "Parameters" in sections(doc), f"{name}: no Parameters section"
        return
    found = sections(doc)
    assert "Parameters" in found, f"{name}: no Parameters section"
    returns_none = inspect.signature(obj).return_annotation in (None, "None")
    assert returns_none or "Returns" in found, f"{name}: no Returns section"


def test_the_check_sees_the_files():
    files = source_files()
    assert "nn/conv.py" in files and "stages/train.py" in files and "lenet/predict.py" in files
    assert EXCLUDED <= set(files), "an excluded file is gone: drop it from EXCLUDED"


@pytest.mark.parametrize("path", [f for f in source_files() if f not in EXCLUDED])
def test_docstrings_are_numpydoc(path):
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    problems = [f"{path}:{line} {name}: {problem}"
                for name, line, doc in documented_nodes(tree)
                for problem in docstring_problems(doc)]
    problems += [f"{path}:{line} {name}: {problem}"
                 for name, line, doc in documented_nodes(tree)
                 if is_public(name) and (problem := summary_problem(doc))]
    assert not problems, "docstrings not in numpydoc style:\n" + "\n".join(problems)


@pytest.mark.parametrize("doc", [
    "Sum.\n\nArgs\n----\nx : int\n",
    "Sum.\n\nArgs:\n    x: an int.\nReturns:\n    The sum.\n",
    "Sum.\n\n    Arguments:\n        x: an int.\n",
    "Sum.\n\nInputs\n------\nx : int\n",
])
def test_the_check_fails_on_other_styles(doc):
    assert docstring_problems(doc)


def test_the_summary_check():
    assert summary_problem("Sum of two numbers,\nreturned as an int.") is not None
    assert summary_problem("Sum.\n\nMore prose.\non two lines.") is None
    assert summary_problem("Sum.") is None


def test_the_check_passes_numpydoc():
    doc = ("Sum.\n\nParameters\n----------\nx : int\n    The first.\n\nReturns\n-------\nint\n\n"
           "Shape\n-----\nx : (N, C, H, W) -> out : (N, C, H, W)\n\nNotes\n-----\nProse: a colon.\n")
    assert docstring_problems(doc) == []
