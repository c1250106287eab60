"""The spec language: load a YAML spec with positions, validate it, resolve it.

`load_spec` is the one entry point the CLI and the runner use: it returns a
`LoadedSpec` or raises `funcpipe.errors.SpecErrors` holding every error found,
each with its file, line, column, dotted path, message and hint. `check_spec`
is what ``funcpipe validate`` uses: it reports instead of raising, and by
default does not require the variables only a run's environment has.
"""

from __future__ import annotations

from funcpipe.spec._format import ErrorFormat, format_error, format_errors
from funcpipe.spec._load import SpecCheck, check_spec, load_spec, load_spec_text
from funcpipe.spec.loaded import LoadedSpec
from funcpipe.spec.models import OnError, PipelineSpec, QuerySpec, StageSpec

__all__ = [
    "ErrorFormat",
    "LoadedSpec",
    "OnError",
    "PipelineSpec",
    "QuerySpec",
    "SpecCheck",
    "StageSpec",
    "check_spec",
    "format_error",
    "format_errors",
    "load_spec",
    "load_spec_text",
]
