"""Sandboxed Jinja2 templates (funcpipe/spec/templating.py)."""

from __future__ import annotations

import pytest

from funcpipe.spec.templating import (
    MAX_OUTPUT,
    TemplateError,
    check_template,
    has_template,
    render_template,
)


def test_a_template_renders_its_variables() -> None:
    assert render_template("{{ params.corpus }}/x", {"params": {"corpus": "docs"}}) == "docs/x"


def test_statements_and_filters_work() -> None:
    source = "{% for c in chunks %}{{ c.text | upper }};{% endfor %}"
    assert render_template(source, {"chunks": [{"text": "a"}, {"text": "b"}]}) == "A;B;"


def test_an_undefined_name_is_an_error_naming_what_is_available() -> None:
    with pytest.raises(TemplateError, match="'nope' is undefined") as info:
        render_template("{{ nope }}", {"params": {}})
    assert info.value.hint is not None and "params" in info.value.hint


def test_an_undefined_attribute_is_an_error_with_its_line() -> None:
    with pytest.raises(TemplateError, match="has no attribute 'x'") as info:
        render_template("a\nb\n{{ params.x }}", {"params": {}})
    assert info.value.lineno == 3


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ params.__class__ }}",
        "{{ params['__class__'] }}",
        "{{ params | attr('__class__') }}",
        "{{ (1).__class__.__base__.__subclasses__() }}",
    ],
)
def test_private_attributes_are_refused_when_compiled(source: str) -> None:
    with pytest.raises(TemplateError, match="refused by the sandbox"):
        check_template(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{ params | attr(name) }}",
        "{{ params.update({'a': 1}) }}",
        "{{ params.items.__self__ }}",
    ],
)
def test_unsafe_access_is_refused_when_rendered(source: str) -> None:
    with pytest.raises(TemplateError, match="refused by the sandbox"):
        render_template(source, {"params": {"x": 1}, "name": "__class__"})


@pytest.mark.parametrize("source", ["{{ 'a' * 1000000000 }}", "{{ [1] * 1000000000 }}", "{{ 9 ** 99999 }}"])
def test_huge_values_are_refused(source: str) -> None:
    with pytest.raises(TemplateError, match="refused by the sandbox"):
        render_template(source, {})


def test_no_globals_are_available() -> None:
    with pytest.raises(TemplateError, match="'range' is undefined"):
        render_template("{{ range(3) | list }}", {})


def test_output_is_capped() -> None:
    source = "{% for a in xs %}{% for b in xs %}{{ big }}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError, match="longer than"):
        render_template(source, {"xs": list(range(100)), "big": "x" * (MAX_OUTPUT // 1000)})


def test_an_exception_in_an_expression_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render_template("{{ 1 / 0 }}", {})


def test_a_syntax_error_carries_its_line() -> None:
    with pytest.raises(TemplateError, match="syntax error") as info:
        check_template("ok\n{% for x in y %}\n{% endfro %}")
    assert info.value.lineno == 3


def test_checking_a_template_gives_the_names_it_reads() -> None:
    assert check_template("{{ question }}{% for c in chunks %}{{ c }}{% endfor %}") == {
        "question",
        "chunks",
    }


def test_include_and_import_find_nothing() -> None:
    with pytest.raises(TemplateError):
        render_template("{% include '/etc/passwd' %}", {})


@pytest.mark.parametrize(
    ("text", "expected"), [("{{ x }}", True), ("{% if %}", True), ("{# c #}", True), ("${X} {x}", False)]
)
def test_template_markup_is_recognised(text: str, expected: bool) -> None:
    assert has_template(text) is expected
