"""``funcpipe graph``: draw the pipeline offline."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from funcpipe.cli._validate import pipeline_or_exit, spec_options
from funcpipe.errors import FuncpipeError
from funcpipe.render import FORMATS


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@spec_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="mermaid", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
def graph(spec: Path, overrides: tuple[str, ...], params_file: Path | None, fmt: str, output: Path | None) -> None:
    """Draw SPEC's pipeline: stages, adapters (provider and model) and policies.

    mermaid and dot are text; svg and png need Graphviz; html is one
    self-contained page that renders offline.
    """
    pipeline = pipeline_or_exit(spec, overrides, params_file, check_sources=False)
    try:
        data = pipeline.render(fmt)
    except FuncpipeError as exc:
        click.echo(f"funcpipe: {exc}", err=True)
        sys.exit(exc.exit_code)
    if output is not None:
        output.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    elif isinstance(data, bytes):
        click.echo("funcpipe: --format png writes binary data: give -o FILE", err=True)
        sys.exit(2)
    else:
        sys.stdout.write(data)
