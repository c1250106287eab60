"""The position-keeping YAML loader (funcpipe/spec/_yaml.py)."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from funcpipe.errors import SpecErrors
from funcpipe.spec import _yaml
from funcpipe.spec._yaml import MAX_BYTES, MAX_DEPTH, Mark, parse_yaml


def _error(text: str) -> SpecErrors:
    with pytest.raises(SpecErrors) as info:
        parse_yaml(text, "f.yaml")
    return info.value


def test_values_and_keys_keep_their_one_based_positions() -> None:
    doc = parse_yaml("a:\n  bb: [1, {c: x}]\n", "f.yaml")
    place = doc.places[("a", "bb", 1, "c")]
    assert (place.key, place.value) == (Mark("f.yaml", 2, 12), Mark("f.yaml", 2, 15))


def test_a_sequence_item_is_located_at_the_item() -> None:
    doc = parse_yaml("xs:\n  - 1\n  - 2\n", "f.yaml")
    assert doc.places[("xs", 1)].value == Mark("f.yaml", 3, 5)


def test_a_missing_path_is_located_at_its_nearest_written_ancestor() -> None:
    doc = parse_yaml("a:\n  b: 1\n", "f.yaml")
    place, found = doc.place(("a", "missing", "deeper"))
    assert (found, place.value) == (("a",), Mark("f.yaml", 2, 3))


def test_keys_stay_strings_even_when_yaml_1_1_reads_them_as_booleans() -> None:
    assert parse_yaml("on: [A]\nyes: 1\n", "f").data == {"on": ["A"], "yes": 1}


def test_plain_scalars_resolve_to_their_types() -> None:
    data = parse_yaml("i: 0x10\nf: 1.5\nb: true\nn: ~\ns: text\n", "f").data
    assert data == {"i": 16, "f": 1.5, "b": True, "n": None, "s": "text"}


def test_dates_stay_strings() -> None:
    assert parse_yaml("d: 2024-01-31\n", "f").data == {"d": "2024-01-31"}


def test_merge_keys_copy_what_the_mapping_does_not_set() -> None:
    text = "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n"
    assert parse_yaml(text, "f").data["use"] == {"y": 3, "x": 1}


def test_a_duplicate_key_is_an_error_at_the_second_key() -> None:
    error = _error("a: 1\nb: 2\na: 3\n").errors[0]
    assert (error.line, error.col, error.path) == (3, 1, "a")
    assert "first written at line 1" in error.message


@pytest.mark.parametrize(
    "text",
    ["x: !!python/name:os.system\n", "x: !!python/object/apply:os.getcwd []\n"],
)
def test_python_tags_are_refused(text: str) -> None:
    assert "is not allowed" in _error(text).errors[0].message


@pytest.mark.parametrize("tag", ["!!binary aGk=", "!!set {a}", "!custom x", "!!timestamp 2024-01-01"])
def test_tags_outside_plain_data_are_refused(tag: str) -> None:
    assert "unsupported YAML tag" in _error(f"x: {tag}\n").errors[0].message


def test_an_explicitly_typed_scalar_that_does_not_parse_is_located() -> None:
    error = _error("a: 1\nb: !!int abc\n").errors[0]
    assert (error.line, error.col, error.message) == (2, 4, "'abc' is not a valid int")


def test_every_refused_tag_in_a_file_is_reported() -> None:
    assert len(_error("a: !x 1\nb: !y 2\n").errors) == 2


def test_a_tab_in_indentation_is_a_located_error_with_a_hint() -> None:
    error = _error("a:\n\tb: 1\n").errors[0]
    assert (error.line, error.col) == (2, 1)
    assert error.hint is not None and "spaces" in error.hint


def test_a_syntax_error_is_located() -> None:
    error = _error("a: [1, 2\nb: 3\n").errors[0]
    assert error.message.startswith("YAML syntax error") and error.line == 2


def test_an_empty_document_is_an_error() -> None:
    assert _error("# only a comment\n").errors[0].message == "the file is empty"


def test_an_empty_document_may_be_allowed() -> None:
    assert parse_yaml("", "f", allow_empty=True).data is None


def test_an_oversized_file_is_refused_before_parsing() -> None:
    assert "too large" in _error("a" * (MAX_BYTES + 1)).errors[0].message


def _laughs() -> str:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_document_is_refused_quickly() -> None:
    started = time.perf_counter()
    error = _error(_laughs()).errors[0]
    assert "refused" in error.message
    # Expanding it would take minutes; the margin only absorbs a loaded machine.
    assert time.perf_counter() - started < 5.0


def test_a_billion_laughs_document_is_refused_with_bounded_memory() -> None:
    text = _laughs()
    tracemalloc.start()
    try:
        _error(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000


def test_an_alias_to_its_own_container_is_an_error() -> None:
    assert "contains it" in _error("a: &a [1, *a]\n").errors[0].message


def test_nesting_past_the_limit_is_refused_without_recursion_errors() -> None:
    depth = 100_000
    error = _error("[" * depth + "]" * depth).errors[0]
    assert f"deeper than {MAX_DEPTH}" in error.message
    assert error.line == 1 and error.col is not None and error.col > MAX_DEPTH
    assert error.hint is not None and "nested" in error.hint


@pytest.mark.parametrize("parser", ["c", "python"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 999, 1001, 5000])
def test_every_nesting_past_the_limit_gets_our_located_error(
    monkeypatch: pytest.MonkeyPatch, parser: str, depth: int
) -> None:
    if parser == "python":
        monkeypatch.setattr(_yaml, "_CParser", None)
    for text in ("[" * depth + "]" * depth, "a: " + "{b: " * depth + "1" + "}" * depth):
        error = _error(text).errors[0]
        assert f"deeper than {MAX_DEPTH}" in error.message
        assert error.line == 1 and error.col is not None


def test_nesting_through_aliases_is_bounded_too() -> None:
    lines = ["a0: &a0 [x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, MAX_DEPTH + 5)]
    assert "deeper than" in _error("\n".join(lines) + "\n").errors[0].message


def test_a_second_document_is_an_error() -> None:
    error = _error("a: 1\n---\nb: 2\n").errors[0]
    assert error.line == 2 and error.hint is not None and "one YAML document" in error.hint


def test_an_unquoted_template_gets_a_quoting_hint() -> None:
    error = _error("path: {{ params.x }}\n").errors[0]
    assert error.hint is not None and "quote" in error.hint


def test_the_pure_python_parser_gives_the_same_data_and_places(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "a:\n  b: [1, {c: x}]\n  d: &d {e: 2}\n  f: *d\n"
    fast = parse_yaml(text, "f")
    monkeypatch.setattr(_yaml, "_CParser", None)
    slow = parse_yaml(text, "f")
    assert (slow.data, slow.places) == (fast.data, fast.places)


def test_the_pure_python_parser_bounds_nesting_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_yaml, "_CParser", None)
    assert "deeper than" in _error("[" * 5000 + "]" * 5000).errors[0].message
