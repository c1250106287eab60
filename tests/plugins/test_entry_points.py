"""Plugins: the example package under ``example_plugin/``, installed for real, used by specs.

See tests/plugins/_support.py for how it is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins._support import funcpipe, install

pytestmark = pytest.mark.slow

SPEC = """\
version: 1
name: shouted
adapters:
  embedder: {kind: example.constant, dim: 3, value: 0.25}
stages:
  - {id: load, use: source.files, with: {path: notes, glob: "*.txt"}}
  - {id: shout, use: example.shout, with: {suffix: "!!"}}
  - {id: embed, use: embed, adapter: embedder}
  - {id: out, use: sink.jsonl, with: {path: out/shouted.jsonl}}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install("example_plugin", tmp_path_factory)


def _funcpipe(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return funcpipe([site], *args, cwd=cwd)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello plugins", encoding="utf-8")
    (tmp_path / "notes" / "b.txt").write_text("entry points", encoding="utf-8")
    (tmp_path / "shouted.yaml").write_text(SPEC, encoding="utf-8")
    return tmp_path


def test_the_install_declares_both_entry_points(site: Path) -> None:
    (dist,) = site.glob("funcpipe_example_plugin-1.0.0.dist-info")
    text = (dist / "entry_points.txt").read_text(encoding="utf-8")
    assert "[funcpipe.stages]\nexample.shout = funcpipe_example:SHOUT" in text
    assert "[funcpipe.adapters]\nexample.constant = funcpipe_example:CONSTANT" in text


def test_a_spec_using_the_plugin_validates_and_runs(site: Path, project: Path) -> None:
    check = _funcpipe(site, "validate", "shouted.yaml", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr
    run = _funcpipe(site, "run", "--quiet", "shouted.yaml", cwd=project)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [json.loads(line) for line in (project / "out" / "shouted.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["data"]["text"] for r in rows) == ["ENTRY POINTS!!", "HELLO PLUGINS!!"]
    assert all(r["data"]["embedding"] == [0.25, 0.25, 0.25] for r in rows)
    assert {r["meta"]["embedder"] for r in rows} == {"example.constant:value=0.25:3"}


def test_without_the_plugin_its_kinds_are_unknown(project: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "funcpipe", "validate", "shouted.yaml"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=project,
    )
    assert proc.returncode == 2
    assert "example.shout" in proc.stdout
    assert "example.constant" in proc.stdout


def test_a_plugin_config_is_validated_with_a_located_error(site: Path, project: Path) -> None:
    spec = project / "shouted.yaml"
    spec.write_text(SPEC.replace("dim: 3", "dim: 0").replace('suffix: "!!"', "sufix: x"), encoding="utf-8")
    proc = _funcpipe(site, "validate", "--format", "json", "shouted.yaml", cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = json.loads(proc.stdout)["files"][0]["errors"]
    assert {(e["path"], e["line"]) for e in errors} >= {("adapters.embedder.dim", 4), ("stages[1].with.sufix", 7)}
    assert any("suffix" in (e.get("hint") or "") + e["message"] for e in errors)


def test_a_misspelt_plugin_kind_gets_a_suggestion(site: Path, project: Path) -> None:
    spec = project / "shouted.yaml"
    spec.write_text(SPEC.replace("use: example.shout", "use: example.shoot"), encoding="utf-8")
    proc = _funcpipe(site, "validate", "shouted.yaml", cwd=project)
    assert proc.returncode == 2
    assert "did you mean 'example.shout'?" in proc.stdout


def test_the_reference_documents_the_plugin_kinds(site: Path, project: Path) -> None:
    proc = _funcpipe(site, "schema", "--reference", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "### stage `example.shout`" in proc.stdout
    assert '| `suffix` | string | `"!"` |' in proc.stdout
    assert "### adapter `example.constant`" in proc.stdout
