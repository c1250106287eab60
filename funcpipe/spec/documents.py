"""The spec's YAML machinery, for other YAML documents funcpipe reads (pipeline test files).

The same safe, position-keeping loader and the same located validation
errors as a spec: `parse_yaml` gives a `Document` whose every value has its
`Place`; `pydantic_errors` turns a Pydantic ``ValidationError`` into
`funcpipe.errors.SpecError`\\ s at those places, with "did you mean" hints.
"""

from __future__ import annotations

from funcpipe.spec._diagnose import pydantic_errors, value_at
from funcpipe.spec._load import SET_FILE
from funcpipe.spec._paths import Path, format_path, parse_path
from funcpipe.spec._yaml import Document, Mark, Place, parse_yaml

__all__ = [
    "SET_FILE",
    "Document",
    "Mark",
    "Path",
    "Place",
    "format_path",
    "parse_path",
    "parse_yaml",
    "pydantic_errors",
    "value_at",
]
