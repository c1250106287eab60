"""`funcpipe.spec` exports exactly what we mean to export."""

from __future__ import annotations

import funcpipe.spec

EXPECTED = [
    "ErrorFormat",
    "LoadedSpec",
    "PipelineSpec",
    "SpecCheck",
    "check_spec",
    "format_errors",
    "load_spec",
    "load_spec_text",
]


def test_the_public_surface_is_exactly_the_intended_names() -> None:
    assert funcpipe.spec.__all__ == EXPECTED


def test_every_exported_name_exists() -> None:
    assert all(hasattr(funcpipe.spec, name) for name in funcpipe.spec.__all__)


def test_the_surface_is_sorted() -> None:
    assert funcpipe.spec.__all__ == sorted(funcpipe.spec.__all__)
