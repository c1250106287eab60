"""The CLI is a thin caller of the root API: it never reaches into the runner, the compiler or the loader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[2] / "funcpipe" / "cli"

ALLOWED_IMPORTS = {
    "funcpipe",  # the root API
    "funcpipe.errors",
    "funcpipe.registry",  # the lazy command group resolves its commands by import path
    "funcpipe.render",  # FORMATS, for --format's choices
    "funcpipe.spec",  # error formatting, and load_spec for commands that need the spec itself
    "funcpipe.spec.schema",  # `funcpipe schema`: generated documents of the spec language
    "funcpipe.spec.reference",
    "funcpipe.pipetest.schema",  # `funcpipe schema --test-file`
    "funcpipe.cli._validate",
    # the displays and printers of a run's outcome, attached and called through the API's values
    "funcpipe.run.logging",
    "funcpipe.run.progress",
    "funcpipe.run.report",
}

RUNNER_INSIDES = {"listeners", "stats", "events", "options", "acct", "dead", "ledger"}


def _modules() -> list[Path]:
    return sorted(CLI.glob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_the_cli_imports_only_the_api_and_display_modules(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m.startswith("funcpipe")} - ALLOWED_IMPORTS == set()


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_the_cli_mutates_no_run_state(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assigned = [
        t.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign | ast.AugAssign)
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Attribute)
    ]
    appended_to = [
        n.func.value.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr in ("append", "extend", "insert")
        and isinstance(n.func.value, ast.Attribute)
    ]
    assert assigned == []
    assert [a for a in appended_to if a in RUNNER_INSIDES] == []
