"""The Markdown reference (funcpipe/spec/reference.py) and its committed copy, docs/reference.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import Field

from funcpipe.adapters.config import AdapterConfig
from funcpipe.cli import main
from funcpipe.policy.models import Duration, Int
from funcpipe.ports import EmbedPort
from funcpipe.registry import REGISTRY, AdapterKind, Registry, StageKind
from funcpipe.spec.reference import reference_markdown
from funcpipe.stages.config import StageConfig

COMMITTED = Path(__file__).parents[2] / "docs" / "reference.md"
TEXT = reference_markdown()


def _section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    end = text.find("\n### ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _row(section: str, field: str) -> list[str]:
    for line in section.splitlines():
        if line.startswith(f"| `{field}` |"):
            return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    raise AssertionError(f"no row for {field!r} in:\n{section}")


def test_the_committed_reference_is_up_to_date() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == TEXT, (
        "docs/reference.md is stale: run `funcpipe schema --reference -o docs/reference.md`"
    )


@pytest.mark.parametrize("name", sorted(REGISTRY.stages))
def test_every_stage_kind_has_a_row_for_each_field(name: str) -> None:
    kind = REGISTRY.stages[name]
    section = _section(TEXT, f"### stage `{name}`")
    for field_name, field in kind.config.model_fields.items():
        assert _row(section, field.alias or field_name)[4].startswith((field.description or "")[:40])


@pytest.mark.parametrize("name", sorted(REGISTRY.adapters))
def test_every_adapter_kind_has_a_row_for_each_field_but_kind(name: str) -> None:
    kind = REGISTRY.adapters[name]
    section = _section(TEXT, f"### adapter `{name}`")
    for field_name, field in kind.config.model_fields.items():
        if field_name != "kind":
            _row(section, field.alias or field_name)
    assert "| `kind` |" not in section


def test_types_defaults_and_bounds_are_those_validation_uses() -> None:
    files = _section(TEXT, "### stage `source.files`")
    assert _row(files, "path")[1:4] == ["string", "required", "1 to 4096 characters"]
    assert _row(files, "max_bytes")[1:4] == ["integer", "`10000000`", "1 to 1000000000"]
    assert _row(files, "mode")[1:3] == ["`text` or `bytes`", "`text`"]
    assert _row(files, "glob")[2] == '`"**/*"`'  # a YAML alias unquoted
    openai = _section(TEXT, "### adapter `openai`")
    assert _row(openai, "request_timeout")[1:3] == ["duration", "`1m`"]
    assert _row(openai, "dimensions")[1:4] == ["integer or null", "none", "1 to 65536"]
    assert _row(openai, "headers")[2] == "`{}`"  # a default factory's value
    pgvector = _section(TEXT, "### adapter `pgvector`")
    assert _row(pgvector, "schema")[2] == "`public`"  # the alias a spec writes
    assert "resume key" in _row(_section(TEXT, "### stage `vector.upsert`"), "sync")[4]


def test_a_pipe_in_a_pattern_does_not_split_its_table_row() -> None:
    row = _row(_section(TEXT, "### adapter `ollama`"), "keep_alive")
    assert len(row) == 5
    assert r"ms\|s" in row[3]


class _TuneConfig(StageConfig):
    """Tune each item."""

    level: Int = Field(3, ge=1, le=9, description="How hard.")
    wait: Duration = Field(0.25, description="Pause between items.")


class _EchoConfig(AdapterConfig):
    """Echo embedder."""

    dim: Int = Field(..., ge=1, description="Dimension.")


def test_a_plugin_kind_is_documented_like_a_builtin() -> None:
    reg = Registry()
    reg.add_stage(StageKind("acme.tune", _TuneConfig, "acme:tune", needs=EmbedPort, description="Tune items."))
    reg.add_adapter(AdapterKind("acme.echo", _EchoConfig, (EmbedPort,), "acme:echo", "Echo."))
    text = reference_markdown(reg)
    stage = _section(text, "### stage `acme.tune`")
    assert "`adapter:` required, providing embedding" in stage
    assert _row(stage, "level")[1:5] == ["integer", "`3`", "1 to 9", "How hard."]
    assert _row(stage, "wait")[1:3] == ["duration", "`250ms`"]
    assert _row(_section(text, "### adapter `acme.echo`"), "dim")[1:4] == ["integer", "required", "≥ 1"]
    assert "[`acme.echo`](#adapter-acmeecho)" in text


def test_the_schema_command_writes_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "reference.md"
    result = CliRunner().invoke(main, ["schema", "--reference", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == TEXT
    printed = CliRunner().invoke(main, ["schema", "--reference"])
    assert printed.exit_code == 0
    assert printed.output == TEXT
