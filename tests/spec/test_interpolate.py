"""``${VAR}`` interpolation (funcpipe/spec/_interpolate.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.spec._interpolate import interpolate_document, interpolate_text
from funcpipe.spec._yaml import parse_yaml


def test_a_set_variable_is_substituted() -> None:
    assert interpolate_text("postgresql://${HOST}/db", {"HOST": "h"}) == "postgresql://h/db"


def test_the_default_is_used_when_the_variable_is_unset() -> None:
    assert interpolate_text("${PORT:-5432}", {}) == "5432"


def test_the_default_is_used_when_the_variable_is_empty() -> None:
    assert interpolate_text("${PORT:-5432}", {"PORT": ""}) == "5432"


def test_an_empty_variable_without_default_is_empty() -> None:
    assert interpolate_text("[${X}]", {"X": ""}) == "[]"


def test_a_default_may_be_empty() -> None:
    assert interpolate_text("[${X:-}]", {}) == "[]"


def test_double_dollar_writes_a_literal_reference() -> None:
    assert interpolate_text("$${HOME} and $$ and $HOME", {"HOME": "/root"}) == ("${HOME} and $$ and $HOME")


def test_an_unset_variable_without_default_names_the_variable() -> None:
    with pytest.raises(ValueError, match="environment variable NOPE is not set"):
        interpolate_text("${NOPE}", {})


@pytest.mark.parametrize("text", ["${}", "${1X}", "${A B}", "${unclosed"])
def test_a_malformed_reference_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="malformed variable reference"):
        interpolate_text(text, {})


@settings(max_examples=200, derandomize=True)
@given(st.text(alphabet="${}:-ab \n", max_size=30))
def test_escaping_every_reference_gives_back_the_text(text: str) -> None:
    assert interpolate_text(text.replace("${", "$${"), {}) == text


@settings(max_examples=100, derandomize=True)
@given(st.text(alphabet=st.characters(blacklist_characters="$"), max_size=40))
def test_text_without_a_dollar_is_unchanged(text: str) -> None:
    assert interpolate_text(text, {"A": "x"}) == text


def test_the_document_remembers_what_was_written_for_each_rewritten_value() -> None:
    doc = parse_yaml("dsn: ${DSN}\nplain: x\n", "f")
    assert interpolate_document(doc, {"DSN": "postgresql://u:pw@h/db"}) == []
    assert doc.data["dsn"] == "postgresql://u:pw@h/db"
    assert doc.written == {("dsn",): "${DSN}"}


def test_env_fields_hold_names_and_are_never_interpolated() -> None:
    doc = parse_yaml("api_key_env: OPENAI_API_KEY\n", "f")
    assert interpolate_document(doc, {"OPENAI_API_KEY": "sk-secret"}) == []
    assert doc.data == {"api_key_env": "OPENAI_API_KEY"}


def test_an_env_field_holding_a_reference_is_an_error() -> None:
    doc = parse_yaml("x:\n  api_key_env: ${KEY}\n", "f")
    (error,) = interpolate_document(doc, {"KEY": "sk-secret"})
    assert (error.line, error.col, error.path) == (2, 16, "x.api_key_env")
    assert "sk-secret" not in error.render()


def test_every_unset_variable_is_reported() -> None:
    doc = parse_yaml('a: ${A}\nb: ["${B}"]\n', "f")
    errors = interpolate_document(doc, {})
    assert [(e.line, e.col) for e in errors] == [(1, 4), (2, 5)]
