"""Sources as a user meets them: ``funcpipe validate`` and ``funcpipe run`` as real subprocesses.

A missing path or an empty glob is a located spec error (exit 2); bad lines
and unreadable files are dead letters naming them while the rest flows on;
never a traceback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "stages" / "data"


def funcpipe(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "funcpipe", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def spec(tmp: Path, source: str) -> Path:
    path = tmp / "p.yaml"
    path.write_text(
        "version: 1\nname: p\nstages:\n"
        f"  - id: load\n    use: {source.split()[0]}\n    with:\n"
        + "".join(f"      {line}\n" for line in source.split(" | ")[1:])
        + "  - {id: out, use: sink.jsonl, with: {path: out.jsonl}}\n",
        encoding="utf-8",
    )
    return path


def dead(tmp: Path) -> list[dict[str, object]]:
    path = tmp / ".funcpipe" / "p.dead.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def sink(tmp: Path) -> list[dict[str, object]]:
    path = tmp / "out.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_mistyped_directory_is_a_located_error_with_a_guess(tmp_path: Path, command: str) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a")
    spec(tmp_path, "source.files | path: doc | glob: '*.md'")
    proc = funcpipe(command, "p.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        "p.yaml:7:13: stages[0].with.path: path 'doc' does not exist (did you mean 'docs'?)"
        in proc.stdout + proc.stderr
    )
    assert "allow_empty: true" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_a_glob_matching_nothing_is_a_located_error(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a")
    spec(tmp_path, "source.files | path: docs | glob: '*.mdx'")
    proc = funcpipe("validate", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "p.yaml:7:13: stages[0].with.path: no file under 'docs' matches glob '*.mdx'" in proc.stdout
    assert "*.md" in proc.stdout  # what the directory does hold


def test_allow_empty_runs_an_empty_source_to_ok(tmp_path: Path) -> None:
    spec(tmp_path, "source.files | path: nothing | allow_empty: true")
    assert funcpipe("validate", "p.yaml", cwd=tmp_path).returncode == 0
    proc = funcpipe("run", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_a_templated_path_is_checked_at_run_start_not_at_validate(tmp_path: Path) -> None:
    spec(tmp_path, "source.files | path: '${CORPUS}'")
    assert funcpipe("validate", "p.yaml", cwd=tmp_path, env={"CORPUS": "elsewhere"}).returncode == 0
    proc = funcpipe("run", "p.yaml", "--report", "r.json", cwd=tmp_path, env={"CORPUS": "gone"})
    assert proc.returncode == 2
    assert "p.yaml:7:13: stages[0].with.path: path 'gone' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["status"], report["exit_code"], report["accounting"]["sources"]) == ("error", 2, 0)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_missing_jsonl_file_is_a_located_error(tmp_path: Path, command: str) -> None:
    spec(tmp_path, "source.jsonl | path: missing.jsonl")
    proc = funcpipe(command, "p.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "p.yaml:7:13: stages[0].with.path: file 'missing.jsonl' does not exist" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_directory_named_as_jsonl_is_a_located_error(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").mkdir()
    spec(tmp_path, "source.jsonl | path: d.jsonl")
    proc = funcpipe("validate", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "stages[0].with.path: 'd.jsonl' is a directory" in proc.stdout


def test_bad_jsonl_lines_are_dead_letters_and_the_rest_flows(tmp_path: Path) -> None:
    shutil.copy(DATA / "bad_lines.jsonl", tmp_path / "in.jsonl")
    spec(tmp_path, "source.jsonl | path: in.jsonl | id_field: id | text_field: text | max_line_bytes: 200")
    proc = funcpipe("run", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [r["data"] for r in sink(tmp_path)] == ["first, after a BOM", "last one"]
    letters = dead(tmp_path)
    assert [(d["error"]["code"], d["meta"]["line"], d["meta"]["path"], d["stage"]) for d in letters] == [
        ("BAD_INPUT", n, "in.jsonl", "load") for n in (3, 4, 5, 6, 7, 8, 9, 10)
    ]
    assert "not valid UTF-8" in letters[0]["error"]["msg"]
    assert "invalid JSON" in letters[1]["error"]["msg"]


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc for a file that fails to read")
def test_a_file_that_fails_to_read_is_a_dead_letter_naming_it(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "good.txt").write_text("fine")
    # Reading /proc/self/mem from offset 0 fails with EIO: a real I/O error mid-run.
    (tmp_path / "docs" / "broken.txt").symlink_to("/proc/self/mem")
    spec(tmp_path, "source.files | path: docs")
    proc = funcpipe("run", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    letters = dead(tmp_path)
    assert [(d["error"]["code"], d["meta"]["path"], d["stage"]) for d in letters] == [
        ("BAD_INPUT", "broken.txt", "load")
    ]
    assert "cannot read broken.txt" in letters[0]["error"]["msg"]
    assert [r["meta"]["path"] for r in sink(tmp_path)] == ["good.txt"]


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc for a file that fails to read")
def test_a_jsonl_file_that_fails_to_read_is_a_dead_letter_naming_it(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").symlink_to("/proc/self/mem")
    spec(tmp_path, "source.jsonl | path: in.jsonl | allow_empty: true")
    proc = funcpipe("run", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    letters = dead(tmp_path)
    assert [(d["error"]["code"], d["meta"]["path"]) for d in letters] == [("BAD_INPUT", "in.jsonl")]
    assert "cannot read in.jsonl after line 0" in letters[0]["error"]["msg"]
