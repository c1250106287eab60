"""Imports point downward only: DESIGN.md's layer table, checked on every module's imports.

Every module of the package is parsed with `ast`, and every import in it
(at the top, inside functions, under ``TYPE_CHECKING``) is checked against
the table below. There is no list of exceptions: a module that needs
something from a layer above it means the thing is in the wrong layer.

The top-level modules have no folder of their own:

- ``funcpipe.errors`` and ``funcpipe._redact`` are the floor: stdlib only,
  importing no other funcpipe module, so every layer may raise the errors
  and hide secrets the one way.
- ``funcpipe.testing`` is a tool for tests, beside the package rather than
  in its stack: it may use core and policy (its clock is policy's), and
  nothing in the package imports it but the root API and ``funcpipe.pipetest``
  (``funcpipe test`` runs pipelines on its virtual loop).

``funcpipe.__main__`` is the CLI's (``python -m funcpipe`` runs it); the
root's private modules (``funcpipe._api``, ``funcpipe._session``) are the root's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import funcpipe

PACKAGE = Path(funcpipe.__file__).parent

# What each layer may import directly; what those may import, it may too.
MAY_IMPORT: dict[str, set[str]] = {
    "floor": set(),
    "core": set(),
    "policy": {"core"},
    "ports": {"core"},
    "adapters": {"core", "ports", "policy"},
    "stages": {"core", "policy", "ports"},
    "registry": {"adapters", "stages"},
    "spec": {"registry"},
    "compile": {"spec", "registry", "stages"},
    "run": {"compile"},
    "render": {"compile"},
    "testing": {"core", "policy"},
    "pipetest": {"run", "testing"},
    "cli": {"run", "render", "root"},
    "root": {"run", "render", "testing", "pipetest"},
}

TOP_LEVEL = {"errors": "floor", "_redact": "floor", "__main__": "cli", "_api": "root", "_session": "root"}
"""The layer of each top-level module (the others are packages, named by their folder)."""

NO_SERVICE_LIBRARIES = ("core", "policy", "ports", "stages")
SERVICE_LIBRARIES = {"httpx", "asyncpg", "click", "rich"}


def _closure(layer: str) -> set[str]:
    seen: set[str] = set()
    todo = [layer]
    while todo:
        for dep in MAY_IMPORT[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    # Every layer stands on the floor.
    return (seen | {"floor"}) - {layer}


ALLOWED = {layer: _closure(layer) | {layer} for layer in MAY_IMPORT}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    return TOP_LEVEL.get(parts[1], parts[1])


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in the file, wherever it is."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module == "funcpipe":
                # ``from funcpipe import x``: x may be a subpackage, or a root name.
                found.extend(
                    (node.lineno, f"funcpipe.{a.name}" if (PACKAGE / a.name).exists() else "funcpipe")
                    for a in node.names
                )
            else:
                found.append((node.lineno, module))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    assert MODULES
    unknown = {_layer(_module_name(p)) for p in MODULES} - set(MAY_IMPORT)
    assert unknown == set(), f"modules outside DESIGN.md's layers: {unknown}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downward(path: Path) -> None:
    layer = _layer(_module_name(path))
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module} ({_layer(module)})"
        for line, module in _imports(path)
        if module.split(".")[0] == "funcpipe" and _layer(module) not in ALLOWED[layer]
    ]
    assert wrong == [], f"{layer} may import only {sorted(ALLOWED[layer])}"


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if _layer(_module_name(p)) in NO_SERVICE_LIBRARIES],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_the_pure_layers_import_no_service_library(path: Path) -> None:
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for line, module in _imports(path)
        if module.split(".")[0] in SERVICE_LIBRARIES
    ]
    assert wrong == []


def test_the_checker_sees_function_level_relative_and_type_checking_imports() -> None:
    # The check is only as good as its parser: imports hidden anywhere count.
    source = """
from typing import TYPE_CHECKING
from . import base
from ..registry import REGISTRY
if TYPE_CHECKING:
    import httpx
def later():
    from funcpipe.run import runner
    import funcpipe.compile
"""
    names = {m for _, m in _imports_in(source, "funcpipe.stages")}
    assert {"funcpipe.stages", "funcpipe.registry", "httpx", "funcpipe.run", "funcpipe.compile"} <= names
    assert ALLOWED["stages"] == {"stages", "core", "policy", "ports", "floor"}
    assert "run" not in ALLOWED["render"] and "render" not in ALLOWED["run"]


def _private_names(path: Path) -> list[tuple[int, str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.lineno, node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("funcpipe")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_layer_imports_another_layers_private_names(path: Path) -> None:
    # A private name is its package's own business (STYLE.md 13): what another layer needs becomes public.
    layer = _layer(_module_name(path))
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} from {module}"
        for line, module, name in _private_names(path)
        if _layer(module) != layer
    ]
    assert wrong == []
