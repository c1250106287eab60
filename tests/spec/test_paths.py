"""Dotted paths (funcpipe/spec/_paths.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.spec._paths import format_path, parse_path


def test_a_path_is_written_with_dots_and_indices() -> None:
    assert format_path(("stages", 2, "policy", "retry", "max_attempts")) == ("stages[2].policy.retry.max_attempts")


def test_a_key_that_is_not_an_identifier_is_quoted() -> None:
    assert format_path(("adapters", "my.llm")) == "adapters['my.llm']"


@pytest.mark.parametrize("text", ["stages[2].with.size", "stages.2.with.size"])
def test_both_index_forms_parse(text: str) -> None:
    assert parse_path(text) == ("stages", 2, "with", "size")


@pytest.mark.parametrize("text", ["", ".a", "a.", "a..b", "a[x]"])
def test_malformed_paths_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a key path"):
        parse_path(text)


_KEY = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)


@settings(max_examples=100, derandomize=True)
@given(st.lists(st.one_of(_KEY, st.integers(0, 99)), min_size=1, max_size=6).filter(lambda p: isinstance(p[0], str)))
def test_formatting_then_parsing_gives_the_path_back(path: list[str | int]) -> None:
    assert parse_path(format_path(tuple(path))) == tuple(path)
