"""Values no pipeline needs are refused, located, and secrets stay hidden."""

from __future__ import annotations

import pytest

from funcpipe.spec import format_errors
from funcpipe.spec.templating import TemplateError, render_template
from tests.spec._support import INVALID, MINIMAL, errors_of, load, only_error


@pytest.mark.parametrize("path", [p for p in INVALID if "_dsn_" in p.name], ids=lambda p: p.stem)
def test_a_password_in_a_literal_dsn_is_never_shown(path: object) -> None:
    text = path.read_text(encoding="utf-8")  # type: ignore[attr-defined]
    errors = errors_of(text)
    for fmt in ("text", "json", "github"):
        assert "CANARY" not in format_errors(errors, fmt)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["t\\n", "", ".", "..", "a/b", "a\\\\b", "é", "a" * 65, "-a"])
def test_a_name_that_is_not_a_safe_file_name_is_refused(name: str) -> None:
    error = only_error(MINIMAL.replace("name: t", f'name: "{name}"'))
    assert error.path == "name" and error.line == 2


def test_a_name_of_64_characters_is_accepted() -> None:
    assert load(MINIMAL.replace("name: t", "name: " + "a" * 64)).spec.name == "a" * 64


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:p@db.example.com:5432/app",
        "postgres://localhost/app",
        "host=db.example.com dbname=app user=u",
        "postgresql:///app",
        "postgresql:///app?host=/var/run/postgresql",
    ],
)
def test_a_well_formed_literal_dsn_is_accepted(dsn: str) -> None:
    text = MINIMAL.replace("stages:", f'adapters:\n  s: {{kind: pgvector, dsn: "{dsn}"}}\nstages:')
    assert load(text).adapters["s"].dsn == dsn  # type: ignore[attr-defined]


@pytest.mark.parametrize("dsn", ["postgresql://h:port/db", "http://h/db", "not a dsn", "postgresql://h:0/db"])
def test_a_malformed_literal_dsn_is_refused(dsn: str) -> None:
    text = MINIMAL.replace("stages:", f'adapters:\n  s: {{kind: pgvector, dsn: "{dsn}"}}\nstages:')
    error = only_error(text)
    assert error.path == "adapters.s.dsn"


@pytest.mark.parametrize(
    "source",
    [
        "{{ 2**999**999**999**999 }}",
        "{{ 99999999999 ** 999 }}",
        "{{ 'x' | center(999999999) }}",
        "{{ 'x'.ljust(10**9) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '{:>{}}'.format(1, 10**9) }}",
        "{{ '%0999999999d' % 1 }}",
        "{% set a = 'x' * 100000 %}{{ a | replace('', a) }}",
        "{% set a = 'x' * 100000 %}{{ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a }}",
        "{% set l = [1] * 100000 %}{% for i in l %}{% for j in l %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    ],
)
def test_templates_that_would_exhaust_memory_or_time_are_refused(source: str) -> None:
    with pytest.raises(TemplateError, match="refused by the sandbox"):
        render_template(source, {})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ 2 ** 10 }}", "1024"),
        ("{{ '{:,}'.format(12345678) }}", "12,345,678"),
        ("{{ '%5d' % 3 }}", "    3"),
        ("{{ 'ab' * 3 }}", "ababab"),
        ("{{ [1, 2] | join(',') }}", "1,2"),
        ("{{ 'a' ~ 1 }}", "a1"),
    ],
)
def test_ordinary_template_arithmetic_still_works(source: str, expected: str) -> None:
    assert render_template(source, {}) == expected


def test_a_template_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(TemplateError, match="too long"):
        render_template("{{ 1 }}" + "x" * 200_000, {})


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("funcpipe.stages.config:CallableConfig", "fn", "os:path\n"),
        ("funcpipe.adapters.config:PgvectorConfig", "table", "chunks\n"),
        ("funcpipe.adapters.config:AnthropicConfig", "anthropic_version", "2023-06-01\n"),
        ("funcpipe.adapters.config:OllamaConfig", "keep_alive", "5m\n"),
    ],
)
def test_identifiers_match_in_full_a_trailing_newline_is_refused(model: str, field: str, value: str) -> None:
    from pydantic import BaseModel, ValidationError

    from funcpipe.registry import resolve_import

    cls = resolve_import(model)
    assert isinstance(cls, type) and issubclass(cls, BaseModel)
    required = {"model": "m"} if "model" in cls.model_fields and field != "model" else {}
    with pytest.raises(ValidationError):
        cls.model_validate({**required, field: value})


def test_a_path_with_an_odd_key_is_shown_quoted() -> None:
    from funcpipe.spec._paths import format_path

    assert format_path(("params", "a\n")) == "params['a\\n']"
