"""``funcpipe validate`` and ``funcpipe schema``, and the spec options other commands reuse.

Commands that take a spec (``run``, ``query``, ``graph``) add the ``--set``
and ``--params`` options with `spec_options` and load a `funcpipe.Pipeline`
with `pipeline_or_exit`::

    @click.command()
    @click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
    @spec_options
    def run(spec: Path, overrides: tuple[str, ...], params_file: Path | None) -> None:
        pipeline = pipeline_or_exit(spec, overrides, params_file)

This module imports no HTTP or database client, so validating stays fast
enough for a pre-commit hook.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

import funcpipe
from funcpipe.errors import SpecError, SpecErrors
from funcpipe.spec import ErrorFormat, LoadedSpec, SpecCheck, format_errors, load_spec

if TYPE_CHECKING:
    from funcpipe import Pipeline

F = TypeVar("F", bound=Callable[..., Any])


def spec_options(f: F) -> F:
    """Add ``--set KEY=VALUE`` (repeatable) and ``--params FILE`` to a click command.

    The command receives them as ``overrides: tuple[str, ...]`` and
    ``params_file: Path | None``, ready for `pipeline_or_exit` or `funcpipe.load`.
    """
    f = click.option(
        "--params",
        "params_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE",
        help="YAML mapping merged into the spec's params.",
    )(f)
    f = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a value before validation, e.g. --set params.corpus=docs or "
        "--set stages[2].with.size=400 (values are YAML: numbers, booleans, [lists]). Repeatable.",
    )(f)
    return f


def load_or_exit(
    path: str | Path,
    overrides: Sequence[str] = (),
    params_file: str | Path | None = None,
    *,
    fmt: ErrorFormat = "text",
    check_sources: bool = True,
) -> LoadedSpec:
    """`load_spec`, or print its located errors to stderr and exit with code 2.

    For a command that needs the validated spec itself; one that runs,
    queries or draws it uses `pipeline_or_exit`. ``check_sources`` is off
    for commands that read no source (``graph``, ``query``).
    """
    try:
        return load_spec(path, overrides=overrides, params_file=params_file, check_sources=check_sources)
    except SpecErrors as exc:
        click.echo(format_errors(exc.errors, fmt), err=True)
        sys.exit(SpecError.exit_code)


def pipeline_or_exit(
    path: str | Path,
    overrides: Sequence[str] = (),
    params_file: str | Path | None = None,
    *,
    fmt: ErrorFormat = "text",
    check_sources: bool = True,
) -> Pipeline:
    """`funcpipe.load`, or print the spec's located errors to stderr and exit with code 2.

    ``check_sources`` is off for commands that read no source (``graph``, ``query``).
    """
    try:
        return funcpipe.load(path, set=overrides, params=params_file, check_sources=check_sources)
    except SpecErrors as exc:
        click.echo(format_errors(exc.errors, fmt), err=True)
        sys.exit(SpecError.exit_code)
    except SpecError as exc:
        click.echo(format_errors([exc], fmt), err=True)
        sys.exit(SpecError.exit_code)


def _summary(path: Path, check: SpecCheck) -> str:
    if path.name.endswith((".test.yaml", ".test.yml")):
        return f"test file of {check.name}, {check.stages} test{'s' if check.stages != 1 else ''}"
    name = f"pipeline {check.name!r}" if check.name else "pipeline"
    return f"{name}, {check.stages} stage{'s' if check.stages != 1 else ''}"


def _note(variable: str) -> str:
    return f"{variable} is unset; it is read at run time (use --check-env to require it)"


def _github_notice(file: str, message: str) -> str:
    # The escaping of GitHub workflow commands, as for the error annotations.
    data = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    prop = file.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A").replace(":", "%3A").replace(",", "%2C")
    return f"::notice file={prop},title=funcpipe validate::{data}"


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="text for people, json for tools, github for workflow annotations.",
)
@click.option(
    "--check-env",
    is_flag=True,
    help="Require the run's environment (deploy jobs): every ${VAR} without default, and every "
    "variable an adapter's *_env field names, must be set.",
)
@spec_options
def validate(
    files: tuple[Path, ...],
    fmt: ErrorFormat,
    check_env: bool,
    overrides: tuple[str, ...],
    params_file: Path | None,
) -> None:
    """Check spec FILES (and pipeline test files, *.test.yaml) and report every error in every file.

    By default the run's environment is not needed (lint jobs, pre-commit):
    an unset ${VAR} without default is a note, and what depends only on its
    value is not checked. --check-env makes it an error, and also requires
    the variables the adapters read (API keys).

    Exits 0 when all files are valid, 2 when any is not.
    """
    results: list[dict[str, Any]] = []
    status = 0
    internal = False
    for path in files:
        try:
            check = funcpipe.check(path, set=overrides, params=params_file, check_env=check_env)
        except Exception as exc:
            # A bug in funcpipe, not in the spec: say so plainly, go on with
            # the other files, and exit 1 so it is never mistaken for a verdict.
            internal = True
            click.echo(
                f"{path}: internal error while validating: {type(exc).__name__}: {exc} (please report this bug)",
                err=True,
            )
            results.append({"file": str(path), "valid": False, "errors": [], "unset": [], "notes": []})
            continue
        notes = [_note(v) for v in check.unset]
        results.append(
            {
                "file": str(path),
                "valid": check.valid,
                "errors": list(check.errors),
                "unset": list(check.unset),
                "notes": notes,
            }
        )
        if not check.valid:
            status = max(status, SpecError.exit_code)
            if fmt != "json":
                click.echo(format_errors(check.errors, fmt))
        elif fmt == "text":
            click.echo(f"{path}: ok ({_summary(path, check)})")
        if fmt == "text":
            for note in notes:
                click.echo(f"{path}: note: {note}")
        elif fmt == "github":
            for note in notes:
                click.echo(_github_notice(str(path), note))
    if fmt == "json":
        payload = {
            "valid": status == 0 and not internal,
            "files": [{**r, "errors": [e.to_json() for e in r["errors"]]} for r in results],
        }
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
    elif fmt == "text" and status:
        bad = [r for r in results if not r["valid"]]
        count = sum(len(r["errors"]) for r in bad)
        click.echo(
            f"{count} error{'s' if count != 1 else ''} in {len(bad)} of {len(results)} "
            f"file{'s' if len(results) != 1 else ''}"
        )
    sys.exit(1 if internal else status)


@click.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of standard output.",
)
@click.option(
    "--reference",
    is_flag=True,
    help="Print the Markdown reference of every stage and adapter kind (docs/reference.md) instead.",
)
@click.option(
    "--test-file",
    is_flag=True,
    help="Print the JSON Schema of a pipeline test file (*.test.yaml) instead.",
)
def schema(output: Path | None, reference: bool, test_file: bool) -> None:
    """Print the JSON Schema of a spec (for editors and CI).

    It covers the built-in kinds and those of installed plugins. With
    --reference, print the same kinds as a Markdown reference: every field
    with its type, default, bounds and description. A plugin that cannot be
    used (it fails to import, names something that is not a kind, or would
    replace a built-in) is an error, exit code 1: the schema would not
    describe what `funcpipe validate` accepts.
    """
    from funcpipe.registry import REGISTRY

    REGISTRY.load_entry_points()
    if REGISTRY.plugin_problems:
        for problem in REGISTRY.plugin_problems:
            click.echo(f"error: {problem.describe()}\n    hint: {problem.hint}", err=True)
        count = len(REGISTRY.plugin_problems)
        click.echo(
            f"{count} plugin entry point{'s' if count != 1 else ''} cannot be used: no schema written",
            err=True,
        )
        sys.exit(1)
    if test_file:
        from funcpipe.pipetest.schema import pipeline_test_schema_json

        text = pipeline_test_schema_json(REGISTRY)
    elif reference:
        from funcpipe.spec.reference import reference_markdown

        text = reference_markdown(REGISTRY)
    else:
        from funcpipe.spec.schema import schema_json

        text = schema_json(REGISTRY)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
