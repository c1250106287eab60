"""Pydantic errors mapped to YAML positions (funcpipe/spec/_diagnose.py)."""

from __future__ import annotations

import pytest

from funcpipe.policy.models import Policy
from funcpipe.spec._diagnose import field_at, fields_at, show
from funcpipe.spec.models import PipelineSpec
from tests.spec._support import MINIMAL, only_error


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "null"), (True, "true"), ({}, "a mapping"), ([1], "a list"), ("x", "'x'"), (1.5, "1.5")],
)
def test_values_are_shown_as_yaml_would_write_them(value: object, shown: str) -> None:
    assert show(value) == shown


def test_long_values_are_shortened() -> None:
    assert len(show("x" * 500)) == 60


def test_the_fields_at_a_path_are_found_through_unions_and_containers() -> None:
    assert fields_at(PipelineSpec, ("stages", 0, "policy")) == sorted(Policy.model_fields)


def test_the_field_at_a_path_is_found_through_aliases() -> None:
    info = field_at(PipelineSpec, ("stages", 3, "from"))
    assert info is not None and info.alias == "from"


def test_a_bare_duration_error_is_located_at_the_value() -> None:
    error = only_error(MINIMAL + "policies:\n  p: {timeout: later}\n")
    assert (error.path, error.line, error.col) == ("policies.p.timeout", 6, 16)


def test_an_inline_policy_error_does_not_also_complain_about_names() -> None:
    text = MINIMAL.replace("with: {path: docs}", "with: {path: docs}, policy: {concurrency: 0}")
    error = only_error(text)
    assert error.path == "stages[0].policy.concurrency"


def test_an_unknown_field_hint_lists_the_allowed_fields() -> None:
    error = only_error(MINIMAL + "on_error: {mdoe: continue}\n")
    assert error.hint == "allowed here: dead_letter, mode"
    assert error.message == "unknown field 'mdoe' (did you mean 'mode'?)"


def test_the_hint_of_a_value_error_describes_the_field() -> None:
    error = only_error(MINIMAL + "shutdown_timeout: -1\n")
    assert error.hint is not None and error.hint.startswith("shutdown_timeout: ")
