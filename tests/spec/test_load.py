"""Loading a spec end to end (funcpipe/spec/_load.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from funcpipe.adapters.config import HashingConfig, PgvectorConfig
from funcpipe.errors import SpecErrors
from funcpipe.policy.models import NO_POLICY
from funcpipe.spec import load_spec
from funcpipe.spec._load import SET_FILE
from funcpipe.stages.config import ChunkConfig, FilesSourceConfig
from tests.spec._support import HERE, MINIMAL, errors_of, load, only_error

RAG = (HERE / "valid" / "rag.yaml").read_text(encoding="utf-8")


def test_a_valid_spec_resolves_each_stage_config() -> None:
    loaded = load(RAG)
    assert isinstance(loaded.stage_configs["load"], FilesSourceConfig)
    assert loaded.stage_configs["chunk"] == ChunkConfig(size=800, overlap=100)


def test_a_valid_spec_resolves_each_adapter_config() -> None:
    adapters = load(RAG).adapters
    assert adapters["embedder"] == HashingConfig(dim=384)
    assert isinstance(adapters["store"], PgvectorConfig)


def test_each_stage_reads_the_previous_one_and_sources_read_nothing() -> None:
    assert load(RAG).inputs == {
        "load": (),
        "chunk": ("load",),
        "embed": ("chunk",),
        "store": ("embed",),
    }


def test_from_names_the_inputs() -> None:
    loaded = load_spec(HERE / "valid" / "fan_in.yaml", env={})
    assert loaded.inputs["both"] == ("a", "b")
    assert loaded.inputs["out"] == ("both",)
    assert loaded.inputs["raw"] == ("a",)


def test_named_inline_and_absent_policies_resolve() -> None:
    loaded = load_spec(HERE / "valid" / "every_field.yaml", env={})
    assert loaded.stage_policies["embed"] == loaded.spec.policies["embed_api"]
    assert loaded.stage_policies["store"].timeout is not None
    assert loaded.stage_policies["store"].timeout.attempt == 5.0
    assert loaded.stage_policies["chunk"] is NO_POLICY


def test_load_time_templates_render_with_params() -> None:
    assert load(RAG).stage_configs["load"] == FilesSourceConfig(path="docs", glob="**/*.md")


def test_prompts_are_kept_as_templates() -> None:
    query = load(RAG).spec.query
    assert query is not None and "{{ question }}" in query.prompt


def test_the_fingerprint_is_stable() -> None:
    assert load(RAG).fingerprint == load(RAG).fingerprint


def test_the_fingerprint_follows_the_rendered_document() -> None:
    same = RAG.replace("{{ params.corpus }}", "docs")
    other = RAG.replace("size: 800", "size: 700")
    assert load(same).fingerprint == load(RAG).fingerprint != load(other).fingerprint


def test_a_file_spec_knows_its_path_directory_and_text(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a")  # what MINIMAL's source reads
    spec = tmp_path / "p.yaml"
    spec.write_text(MINIMAL, encoding="utf-8")
    loaded = load_spec(spec, env={})
    assert (loaded.path, loaded.base_dir, loaded.text) == (spec, tmp_path.resolve(), MINIMAL)


def test_params_are_kept_on_the_spec() -> None:
    # The query's prompt reads them from the compiled query; nothing else carries a copy.
    assert load(RAG).spec.params == {"corpus": "docs"}


def test_variables_come_from_the_given_environment() -> None:
    text = MINIMAL.replace("path: docs", 'path: "${CORPUS}"')
    assert load(text, env={"CORPUS": "notes"}).stage_configs["load"].path == "notes"  # type: ignore[attr-defined]


def test_a_value_from_the_environment_is_never_shown_in_errors() -> None:
    text = MINIMAL + 'adapters:\n  pg: {kind: pgvector, pool_max: "${POOL}"}\n'
    error = only_error(text, env={"POOL": "hunter2-secret"})
    assert "hunter2-secret" not in error.render()
    assert "'${POOL}'" in error.message


def test_a_value_from_the_environment_is_scrubbed_from_validator_messages() -> None:
    text = MINIMAL + 'adapters:\n  pg: {kind: pgvector, table: "${TABLE}"}\n'
    error = only_error(text, env={"TABLE": "not an identifier"})
    assert "not an identifier" not in error.message and "${TABLE}" in error.message


def test_every_error_is_reported_in_document_order() -> None:
    text = "version: 3\nname: 'a b'\nstages:\n  - {id: x, use: nope}\n"
    assert [(e.line, e.path) for e in errors_of(text)] == [
        (1, "version"),
        (2, "name"),
        (4, "stages[0].use"),
    ]


# --set


def test_set_overrides_a_value_with_a_typed_yaml_scalar() -> None:
    text = MINIMAL + "  - {id: chunk, use: text.chunk}\n"
    loaded = load(text, overrides=["stages.1.with.size=400", "stages[1].with.overlap=0"])
    assert loaded.stage_configs["chunk"] == ChunkConfig(size=400, overlap=0)


def test_set_creates_missing_mappings() -> None:
    assert load(MINIMAL, overrides=["params.corpus=docs"]).spec.params == {"corpus": "docs"}


def test_set_accepts_flow_lists_and_booleans() -> None:
    loaded = load(MINIMAL, overrides=["stages[0].with.exclude=[a, b]", "params.on=true"])
    assert loaded.stage_configs["load"].exclude == ("a", "b")  # type: ignore[attr-defined]
    assert loaded.spec.params == {"on": True}


def test_set_applies_before_templates_render() -> None:
    text = "params: {corpus: docs}\n" + MINIMAL.replace("path: docs", 'path: "{{ params.corpus }}"')
    loaded = load(text, overrides=["params.corpus=notes"])
    assert loaded.stage_configs["load"].path == "notes"  # type: ignore[attr-defined]


def test_set_errors_are_located_in_the_option() -> None:
    error = only_error(MINIMAL, overrides=["name=ok", "stages[0].with.max_bytes=big"])
    assert (error.file, error.line, error.col) == (SET_FILE, 2, 26)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("name", "no '='"),
        ("stages[5].id=x", "is a list of 1 items"),
        ("name.x.y=1", "is not a mapping or a list"),
        ("..=1", "is not a key path"),
        ("name=[unclosed", "YAML syntax error"),
    ],
)
def test_a_bad_override_is_a_located_error(override: str, fragment: str) -> None:
    errors = errors_of(MINIMAL, overrides=[override])
    assert errors[0].file == SET_FILE and fragment in errors[0].message


# --params


def test_a_params_file_is_merged_deeply(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a")  # what MINIMAL's source reads
    spec = tmp_path / "p.yaml"
    spec.write_text("params: {a: 1, nested: {x: 1, y: 2}}\n" + MINIMAL, encoding="utf-8")
    params = tmp_path / "params.yaml"
    params.write_text("nested: {y: 3}\nb: 2\n", encoding="utf-8")
    loaded = load_spec(spec, params_file=params, env={})
    assert loaded.spec.params == {"a": 1, "nested": {"x": 1, "y": 3}, "b": 2}


def test_errors_in_params_from_a_file_are_located_in_that_file(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(MINIMAL.replace("path: docs", 'path: "{{ params.dir.x }}"'), encoding="utf-8")
    params = tmp_path / "params.yaml"
    params.write_text("dir: [1]\nother: 2\n", encoding="utf-8")
    with pytest.raises(SpecErrors) as info:
        load_spec(spec, params_file=params, env={})
    assert info.value.errors[0].file == str(spec)


def test_a_params_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a")  # what MINIMAL's source reads
    spec = tmp_path / "p.yaml"
    spec.write_text(MINIMAL, encoding="utf-8")
    params = tmp_path / "params.yaml"
    params.write_text("- a\n", encoding="utf-8")
    with pytest.raises(SpecErrors) as info:
        load_spec(spec, params_file=params, env={})
    error = info.value.errors[0]
    assert (error.file, error.line, error.col) == (str(params), 1, 1)


# files


def test_an_unreadable_file_is_a_located_error(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors, match="cannot read the file"):
        load_spec(tmp_path / "missing.yaml")


def test_a_file_that_is_not_utf8_is_located_at_the_bad_byte(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_bytes(b"version: 1\nname: caf\xe9\n")
    with pytest.raises(SpecErrors) as info:
        load_spec(spec)
    assert (info.value.line, info.value.col) == (2, 10)
