"""The spec language: load a YAML spec with positions, validate it, resolve it.

`load_spec` is the one entry point the CLI and the runner use: it returns a
`LoadedSpec` or raises `funcpipe.errors.SpecErrors` holding every error found,
each with its file, line, column, dotted path, message and hint. `check_spec`
is what ``funcpipe validate`` uses: it reports instead of raising, and by
default does not require the variables only a run's environment has.
"""

from __future__ import annotations

from funcpipe.spec._format import ErrorFormat, format_errors
from funcpipe.spec._load import SpecCheck, check_spec, load_spec, load_spec_text
from funcpipe.spec.loaded import LoadedSpec
from funcpipe.spec.models import PipelineSpec

# What the layers above (compile, the CLI, the root API) and tools use. The
# document's parts (`StageSpec`, `QuerySpec`...) are in `funcpipe.spec.models`;
# the schema and the reference in `funcpipe.spec.schema` and `.reference`.
__all__ = [
    "ErrorFormat",
    "LoadedSpec",
    "PipelineSpec",
    "SpecCheck",
    "check_spec",
    "format_errors",
    "load_spec",
    "load_spec_text",
]
