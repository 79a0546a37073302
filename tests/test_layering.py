"""The layering: lenet -> stages -> nn, no import back up, no stage script imported, no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nn", "stages", "lenet")
STAGE_SCRIPTS = {f"stages.{path.stem}" for path in (ROOT / "stages").glob("*.py") if path.stem != "__init__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports anywhere (lazy imports inside functions included)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] in PACKAGES}


MODULES = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
GRAPH = {name: {imported for imported in project_imports(path) if imported in MODULES} for name, path in MODULES.items()}


@pytest.mark.parametrize("package, forbidden", [("nn", ("stages", "lenet")), ("stages", ("lenet",))])
def test_no_import_back_up(package, forbidden):
    upward = {name: sorted(i for i in GRAPH[name] if i.split(".")[0] in forbidden)
              for name in GRAPH if name.split(".")[0] == package}
    assert {name: found for name, found in upward.items() if found} == {}


def test_lenet_imports_no_stage_script():
    assert len(STAGE_SCRIPTS) == 5
    found = {name: sorted(GRAPH[name] & STAGE_SCRIPTS) for name in GRAPH if name.startswith("lenet")}
    assert {name: scripts for name, scripts in found.items() if scripts} == {}


def test_no_import_cycle():
    # A package's __init__ importing its own submodules is not a cycle of ideas: drop those edges.
    graph = {name: {i for i in targets if not (MODULES[name].name == "__init__.py" and i.startswith(name + "."))}
             for name, targets in GRAPH.items()}
    visiting, done = [], set()

    def visit(name):
        if name in done:
            return
        assert name not in visiting, " -> ".join(visiting[visiting.index(name):] + [name])
        visiting.append(name)
        for target in sorted(graph[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert len(done) == len(MODULES) > 40
