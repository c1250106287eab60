"""A plugin that cannot be used is reported as itself, located where a spec needs it, never as a traceback.

``faulty_plugin/`` declares four unusable entry points: one whose import
fails, one naming a function, one whose kind would replace the built-in
``embed``, and a stage kind in the adapters group. It is installed for real,
alone and beside the working example plugin (see _support.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plugins._support import funcpipe, install

DIST = "funcpipe-faulty-plugin 0.1.0"

SPEC = """\
version: 1
name: faulty
adapters:
  embedder: {kind: hashing, dim: 8}
stages:
  - {id: load, use: source.files, with: {path: notes, glob: "*.txt"}}
  - {id: chunk, use: text.chunk}
  - {id: embed, use: embed, adapter: embedder}
  - {id: out, use: sink.jsonl, with: {path: out/rows.jsonl}}
"""


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install("faulty_plugin", tmp_path_factory)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install("example_plugin", tmp_path_factory)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello plugins", encoding="utf-8")
    return tmp_path


def _spec(project: Path, text: str) -> str:
    (project / "p.yaml").write_text(text, encoding="utf-8")
    return "p.yaml"


def _no_traceback(*outputs: str) -> None:
    assert all("Traceback" not in o for o in outputs)


def test_a_kind_of_a_plugin_that_fails_to_import_is_reported_as_that_failure(faulty: Path, project: Path) -> None:
    spec = _spec(project, SPEC.replace("use: text.chunk", "use: faulty.broken"))
    proc = funcpipe([faulty], "validate", "--format", "json", spec, cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    _no_traceback(proc.stdout, proc.stderr)
    (error,) = json.loads(proc.stdout)["files"][0]["errors"]
    assert (error["path"], error["line"]) == ("stages[1].use", 7)
    assert error["message"] == (
        "stage kind 'faulty.broken' comes from a plugin that cannot be used: plugin entry point 'faulty.broken' "
        f"(funcpipe.stages of {DIST}, funcpipe_faulty.broken:KIND): importing it failed: "
        "ModuleNotFoundError: No module named 'funcpipe_faulty_missing_dependency'"
    )
    assert 'python -c "import funcpipe_faulty.broken"' in error["hint"]
    assert "funcpipe-faulty-plugin" in error["hint"]


def test_run_and_the_python_api_report_it_the_same_way(faulty: Path, project: Path) -> None:
    spec = _spec(project, SPEC.replace("use: text.chunk", "use: faulty.broken"))
    run = funcpipe([faulty], "run", "--quiet", spec, cwd=project)
    assert run.returncode == 2
    _no_traceback(run.stdout, run.stderr)
    assert "p.yaml:7:" in run.stdout + run.stderr and "importing it failed" in run.stdout + run.stderr
    assert not (project / "out").exists()
    api = funcpipe(
        [faulty],
        cwd=project,
        python="import funcpipe\ntry:\n    funcpipe.load('p.yaml')\nexcept funcpipe.SpecErrors as e:\n"
        "    print(e.errors[0].path, '|', e.errors[0].message)\n",
    )
    assert api.returncode == 0, api.stderr
    assert api.stdout.startswith("stages[1].use | stage kind 'faulty.broken' comes from a plugin")


def test_a_misspelt_kind_is_not_blamed_on_the_broken_plugin(faulty: Path, project: Path) -> None:
    spec = _spec(project, SPEC.replace("use: text.chunk", "use: text.chnk"))
    proc = funcpipe([faulty], "validate", "--format", "json", spec, cwd=project)
    assert proc.returncode == 2
    (error,) = json.loads(proc.stdout)["files"][0]["errors"]
    assert error["message"] == "unknown stage kind 'text.chnk' (did you mean 'text.chunk'?)"
    assert "faulty" not in error["hint"]


def test_an_entry_point_naming_a_function_is_named_with_what_it_names(faulty: Path, project: Path) -> None:
    spec = _spec(project, SPEC.replace("use: text.chunk", "use: faulty.function"))
    proc = funcpipe([faulty], "validate", spec, cwd=project)
    assert proc.returncode == 2
    _no_traceback(proc.stdout, proc.stderr)
    assert (
        f"plugin entry point 'faulty.function' (funcpipe.stages of {DIST}, funcpipe_faulty.kinds:not_a_kind): "
        "it names the function not_a_kind, not a StageKind" in proc.stdout
    )


def test_the_schema_refuses_to_describe_an_environment_with_unusable_plugins(
    faulty: Path, example: Path, project: Path
) -> None:
    out = project / "schema.json"
    proc = funcpipe([faulty, example], "schema", "-o", str(out), cwd=project)
    assert proc.returncode == 1
    _no_traceback(proc.stdout, proc.stderr)
    assert not out.exists()
    errors = sorted(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert errors == sorted(
        [
            f"error: plugin entry point 'faulty.broken' (funcpipe.stages of {DIST}, funcpipe_faulty.broken:KIND): "
            "importing it failed: ModuleNotFoundError: No module named 'funcpipe_faulty_missing_dependency'",
            f"error: plugin entry point 'faulty.function' (funcpipe.stages of {DIST}, "
            "funcpipe_faulty.kinds:not_a_kind): it names the function not_a_kind, not a StageKind",
            f"error: plugin entry point 'embed' (funcpipe.stages of {DIST}, funcpipe_faulty.kinds:EMBED): "
            "its stage kind 'embed' would replace the built-in stage kind 'embed': refused",
            f"error: plugin entry point 'faulty.stage' (funcpipe.adapters of {DIST}, funcpipe_faulty.kinds:STAGE): "
            "it names a StageKind, not an AdapterKind",
        ]
    )
    assert proc.stderr.rstrip().endswith("4 plugin entry points cannot be used: no schema written")
    reference = funcpipe([faulty], "schema", "--reference", cwd=project)
    assert reference.returncode == 1 and reference.stdout == ""


def test_a_working_plugin_still_works_beside_a_faulty_one_and_embed_stays_the_built_in(
    faulty: Path, example: Path, project: Path
) -> None:
    # Naming a plugin kind loads every entry point, the faulty plugin's `embed` among them: it is refused,
    # and the built-in embed runs (the faulty one's factory does not even exist).
    spec = _spec(
        project,
        SPEC.replace("use: text.chunk", 'use: example.shout, with: {suffix: "!"}').replace(
            "{kind: hashing, dim: 8}", "{kind: example.constant, dim: 3}"
        ),
    )
    proc = funcpipe([faulty, example], "run", "--quiet", spec, cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = (json.loads(line) for line in (project / "out" / "rows.jsonl").read_text(encoding="utf-8").splitlines())
    assert row["data"]["text"] == "HELLO PLUGINS!"
    assert row["data"]["embedding"] == [0.5, 0.5, 0.5]
