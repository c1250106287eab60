"""``funcpipe test``: run pipeline test files (``*.test.yaml``) on virtual time."""

from __future__ import annotations

import sys
from pathlib import Path

import click

import funcpipe

FORMATS = ("text", "json", "junit", "github")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text for people, json for tools, junit (JUnit XML) for CI servers, github for workflow annotations.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
@click.option("--update", is_flag=True, help="Rewrite failed exact expectations with what the runs produced.")
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=None, help="Test files run in parallel (default: CPU count)."
)
def test(paths: tuple[Path, ...], fmt: str, output: Path | None, update: bool, jobs: int | None) -> None:
    """Run the pipeline tests in PATHS (test files, or directories searched for *.test.yaml; default: .).

    Each test runs its spec's real pipeline offline and on virtual time, with
    the test's inputs and adapter overrides, and checks what it produced.
    Exit code 0: every test passed; 1: a test failed; 2: a test file or its
    spec is invalid, or no test file was found.
    """
    results = funcpipe.run_tests(list(paths) or ["."], jobs=jobs, update=update)
    text = results.render(fmt)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
        if fmt != "text":
            click.echo(results.render("text"))
    else:
        click.echo(text)
    sys.exit(results.exit_code)
