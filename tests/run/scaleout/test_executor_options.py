"""Choosing the executor: the spec, the API and the command line, their errors, and a missing Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import funcpipe
from funcpipe.cli import main
from funcpipe.errors import RunError

SPEC = """\
version: 1
name: opts
adapters:
  embedder: {kind: hashing, dim: 8}
stages:
  - {id: load, use: source.files, with: {path: docs, glob: "*.md"}}
  - {id: embed, use: embed, adapter: embedder}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("alpha")
    path = tmp_path / "opts.yaml"
    path.write_text(SPEC)
    return path


def test_ray_options_without_the_ray_executor_are_a_usage_error(project: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(project), "--workers", "2"])
    assert result.exit_code == 2
    assert "address and workers apply to the ray executor" in result.output
    assert not (project.parent / ".funcpipe").exists()


def test_the_api_refuses_them_too_and_names_the_bad_value(project: Path) -> None:
    pipeline = funcpipe.load(project)
    with pytest.raises(ValueError, match="apply to the ray executor"):
        pipeline.run(address="ray://somewhere:10001")
    with pytest.raises(ValueError, match=r"workers: .*greater than or equal to 1.*got 0"):
        pipeline.run(executor="ray", workers=0)


def test_choosing_local_drops_the_spec_s_ray_settings(project: Path) -> None:
    project.write_text(SPEC + "executor: {kind: ray, workers: 3}\n")
    report = funcpipe.load(project).run(executor="local", notify=lambda _line: None)
    assert report.status == "ok" and report.accounting["done"] == 1


def test_a_missing_ray_names_the_extra_and_does_nothing(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra looks like
    with pytest.raises(RunError, match=r"pip install 'funcpipe-runner\[ray\]'"):
        funcpipe.load(project).run(executor="ray", notify=lambda _line: None)
    assert not list((project.parent / ".funcpipe").glob("*.report.json"))
    result = CliRunner().invoke(main, ["run", str(project), "--executor", "ray", "--quiet"])
    assert result.exit_code == 1
    assert "funcpipe-runner[ray]" in result.output


def test_the_scaleout_bench_refuses_a_non_positive_size() -> None:
    bench = Path(__file__).resolve().parents[3] / "bench" / "scaleout.py"
    out = subprocess.run([sys.executable, str(bench), "--docs", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--docs, --words, --cpus and --repeat must be >= 1" in out.stderr
