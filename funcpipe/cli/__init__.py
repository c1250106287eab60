"""The ``funcpipe`` command line: a thin shell over spec, compile, run and render.

Subcommands are imported on first use, so ``funcpipe validate`` (run in
pre-commit hooks) never imports the HTTP or database clients, and
``funcpipe --version`` or ``--help`` import neither Pydantic nor the
registry: this module imports nothing of funcpipe's.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

_COMMANDS: dict[str, str] = {
    "validate": "funcpipe.cli._validate:validate",
    "run": "funcpipe.cli._run:run",
    "query": "funcpipe.cli._run:query",
    "graph": "funcpipe.cli._graph:graph",
    "schema": "funcpipe.cli._validate:schema",
    "test": "funcpipe.cli._test:test",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        path = _COMMANDS.get(cmd_name)
        if path is None:
            return None
        module, _, name = path.partition(":")
        cmd: Any = getattr(importlib.import_module(module), name)  # an import error here is a bug: let it show
        return cmd if isinstance(cmd, click.Command) else None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="funcpipe-runner")
def main() -> None:
    """Declarative async pipelines: stages, adapters and policies as data."""
