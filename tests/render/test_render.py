"""``funcpipe graph``: structure of the Mermaid output, DOT rendered by Graphviz, offline HTML."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from funcpipe.cli import main
from funcpipe.compile import compile_pipeline
from funcpipe.policy.models import Policy
from funcpipe.render import builtin_svg, policy_summary, to_dot, to_html, to_mermaid
from funcpipe.spec import load_spec, load_spec_text

REPO = Path(__file__).resolve().parents[2]

FAN = """
version: 1
name: fan
adapters:
  emb: {kind: openai, model: text-embedding-3-small, api_key_env: CANARY_KEY, base_url: "http://user:pw@127.0.0.1:9/v1"}
  db: {kind: pgvector, dsn: "postgresql://admin:hunter2@127.0.0.1/db", table: docs}
policies:
  api:
    retry: {max_attempts: 5}
    rate_limit: {requests: 50, per: 1s}
    concurrency: 8
    circuit_breaker: {failures: 3}
stages:
  - {id: a, use: source.files, with: {path: a}}
  - {id: b, use: source.files, with: {path: b}}
  - {id: both, use: text.chunk, from: [a, b]}
  - {id: embed, use: embed, adapter: emb, policy: api, batch: {size: 64, max_wait: 200ms}}
  - {id: store, use: vector.upsert, adapter: db, from: embed}
  - {id: copy, use: sink.jsonl, with: {path: out.jsonl}, from: embed}
"""


@pytest.fixture
def fan(tmp_path: Path):  # type: ignore[no-untyped-def]
    return compile_pipeline(load_spec_text(FAN, base_dir=tmp_path, check_sources=False))


def test_policy_summary_is_compact() -> None:
    p = Policy.model_validate(
        {
            "retry": {"max_attempts": 5},
            "rate_limit": {"requests": 50, "per": "1s"},
            "concurrency": 8,
            "circuit_breaker": {},
        }
    )
    assert policy_summary(p) == "retry ×5 · 50/s · c=8 · breaker"


def test_mermaid_has_a_node_per_stage_and_edges_for_fan_in_and_fan_out(fan) -> None:  # type: ignore[no-untyped-def]
    text = to_mermaid(fan)
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    node_lines = [x for x in lines[1:] if "-->" not in x]
    nodes = {m.group(1): m.group(2) for m in (re.match(r"\s+(n\d+)\W+(.*?)\W*$", x) for x in node_lines) if m}
    ids = {n: label.split("<br/>")[0] for n, label in nodes.items()}
    assert sorted(ids.values()) == ["a", "b", "both", "copy", "embed", "store"]
    by_name = {v: k for k, v in ids.items()}
    edges = {tuple(re.findall(r"n\d+", x)) for x in lines if "-->" in x}
    expected = {("a", "both"), ("b", "both"), ("both", "embed"), ("embed", "store"), ("embed", "copy")}
    assert edges == {(by_name[x], by_name[y]) for x, y in expected}
    assert "emb: openai text-embedding-3-small" in text
    assert "retry ×5 · 50/s · c=8 · breaker" in text
    assert "batch 64 / 200ms" in text


def test_no_secret_or_connection_string_is_drawn(fan, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CANARY_KEY", "sk-canary-9f8e7d")
    for text in (to_mermaid(fan), to_dot(fan), builtin_svg(fan), to_html(fan)):
        for secret in ("sk-canary-9f8e7d", "hunter2", "admin", "user:pw", "postgresql://", "CANARY_KEY"):
            assert secret not in text


def graphviz_available() -> bool:
    if shutil.which("dot"):
        return True
    if os.environ.get("CI"):
        raise AssertionError("CI must install Graphviz (.ci/run does): the DOT rendering tests need it")
    return False


@pytest.mark.skipif(not graphviz_available(), reason="Graphviz `dot` is not installed (CI installs it)")
def test_dot_renders_with_graphviz_to_svg_and_png(fan, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svg = subprocess.run(["dot", "-Tsvg"], input=to_dot(fan).encode(), capture_output=True, check=True).stdout
    assert b"<svg" in svg
    for stage in (b"both", b"embed", b"store", b"copy"):
        assert stage in svg
    spec = tmp_path / "fan.yaml"
    spec.write_text(FAN)
    result = CliRunner().invoke(main, ["graph", str(spec), "--format", "png", "-o", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained_with_no_external_url(fan) -> None:  # type: ignore[no-untyped-def]
    page = to_html(fan)
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page) + re.findall(r"url\((?!#)([^)]+)\)", page)
    assert urls == []
    assert not re.search(r"https?://(?!www\.w3\.org/)", page)


def test_builtin_svg_is_well_formed(fan) -> None:  # type: ignore[no-untyped-def]
    import xml.etree.ElementTree as ET

    root = ET.fromstring(builtin_svg(fan))
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    for stage in ("a", "b", "both", "embed", "store", "copy"):
        assert stage in texts


def test_missing_graphviz_names_the_package(fan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATH", str(tmp_path))
    spec = tmp_path / "fan.yaml"
    spec.write_text(FAN)
    result = CliRunner().invoke(main, ["graph", str(spec), "--format", "svg"])
    assert result.exit_code == 1
    assert "install the 'graphviz' package" in result.output


def test_readme_shows_the_current_graph_of_the_main_job() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "funcpipe", "graph", str(REPO / "pipelines" / "rag.yaml")],
        capture_output=True,
        text=True,
        check=True,
    )
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```mermaid\n(.*?)```", readme, re.S)
    assert block is not None, "README.md has no ```mermaid block"
    assert block.group(1) == proc.stdout, "README's graph is stale: paste `funcpipe graph pipelines/rag.yaml`"


def test_graph_cli_writes_each_text_format(tmp_path: Path) -> None:
    spec = REPO / "pipelines" / "rag.yaml"
    for fmt in ("mermaid", "dot", "html"):
        out = tmp_path / f"g.{fmt}"
        result = CliRunner().invoke(main, ["graph", str(spec), "--format", fmt, "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert "embed" in out.read_text()
    assert load_spec(spec).spec.name == "rag"
