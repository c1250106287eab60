"""Rendering errors as text, JSON and GitHub annotations (funcpipe/spec/_format.py)."""

from __future__ import annotations

import json

from funcpipe.errors import SpecError, SpecErrors
from funcpipe.spec import format_errors

ERROR = SpecError(
    "unknown adapter 'embeder' (did you mean 'embedder'?)",
    file="p.yaml",
    line=7,
    col=14,
    path="stages[2].adapter",
    hint="declare it under `adapters:`",
)


def test_text_gives_the_location_path_and_message_then_the_hint() -> None:
    assert format_errors([ERROR], "text") == (
        "p.yaml:7:14: stages[2].adapter: unknown adapter 'embeder' (did you mean 'embedder'?)\n"
        "    hint: declare it under `adapters:`"
    )


def test_github_gives_one_workflow_command_per_error() -> None:
    assert format_errors([ERROR], "github") == (
        "::error file=p.yaml,line=7,col=14,title=funcpipe validate::stages[2].adapter: "
        "unknown adapter 'embeder' (did you mean 'embedder'?)%0Ahint: declare it under `adapters:`"
    )


def test_github_escapes_the_properties_and_the_message() -> None:
    error = SpecError("50% done\nnext", file="a,b:c.yaml", hint=None)
    assert format_errors([error], "github") == (
        "::error file=a%2Cb%3Ac.yaml,line=1,col=1,title=funcpipe validate::50%25 done%0Anext"
    )


def test_json_gives_an_array_of_error_objects() -> None:
    assert json.loads(format_errors([ERROR, ERROR], "json")) == [ERROR.to_json()] * 2


def test_a_group_of_errors_is_flattened() -> None:
    assert format_errors([SpecErrors([ERROR, ERROR])]).count("p.yaml:7:14") == 2
