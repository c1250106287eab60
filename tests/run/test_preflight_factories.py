"""A stage kind whose factory or prepare step cannot be imported stops the run before any work, without a traceback.

Kinds name both by import path, imported on first use (validating imports no
client); the run imports them all before reading a source.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import funcpipe
from funcpipe.compile import compile_pipeline
from funcpipe.errors import RunError
from funcpipe.run.preflight import load_factories
from funcpipe.spec import load_spec_text

SPEC = """\
version: 1
name: half
stages:
  - {{id: load, use: source.files, with: {{path: notes}}}}
  - {{id: t, use: "tests.run.unloadable_kinds:{kind}"}}
  - {{id: out, use: sink.jsonl, with: {{path: out.jsonl}}}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello", encoding="utf-8")
    return tmp_path


def test_every_stage_gets_its_factory(project: Path) -> None:
    pipeline = compile_pipeline(load_spec_text(SPEC.format(kind="FINE"), base_dir=project))
    factories = load_factories(pipeline)
    assert set(factories) == {"load", "t", "out"}
    assert factories["t"].__qualname__ == "clean"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "NO_FACTORY",
            "stage t: the factory 'funcpipe_not_installed_xyz:make' of stage kind 'test.no_factory' cannot be "
            "imported: ModuleNotFoundError: No module named 'funcpipe_not_installed_xyz' (nothing was run)",
        ),
        (
            "NO_PREPARE",
            "stage t: the prepare step 'tests.run.unloadable_kinds:missing' of stage kind 'test.no_prepare' "
            "cannot be imported: ImportError: module 'tests.run.unloadable_kinds' has no attribute 'missing' "
            "(nothing was run)",
        ),
    ],
)
def test_an_unimportable_factory_or_prepare_step_is_named(project: Path, kind: str, message: str) -> None:
    pipeline = compile_pipeline(load_spec_text(SPEC.format(kind=kind), base_dir=project))
    with pytest.raises(RunError) as info:
        load_factories(pipeline)
    assert str(info.value) == message


def test_the_run_stops_before_reading_anything(project: Path) -> None:
    (project / "half.yaml").write_text(SPEC.format(kind="NO_FACTORY"), encoding="utf-8")
    with pytest.raises(RunError, match="cannot be imported: ModuleNotFoundError"):
        funcpipe.load(project / "half.yaml").run()
    assert not (project / "out.jsonl").exists()
