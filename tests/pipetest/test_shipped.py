"""The repository's own pipeline tests: they pass, and they catch a change to the main job.

`funcpipe test` runs, as a user runs it, on the repository (CI runs its
shipped tests here). Then the main job is edited on a temporary copy: a
changed chunk size and a changed retry policy each make a shipped test
fail, at the expectation that changed, with a diff.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

from funcpipe.pipetest import run_tests

REPO = Path(__file__).resolve().parents[2]


def _funcpipe(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funcpipe", "test", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_funcpipe_test_passes_on_the_repository() -> None:
    proc = _funcpipe("--format", "json", "-j", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout)
    files = {Path(t["file"]).as_posix() for t in results["tests"]}
    assert {"pipelines/rag.test.yaml", "examples/notes/notes.test.yaml", "examples/rag-openai.test.yaml"} <= files
    assert results["failed"] == results["errors"] == 0 and results["passed"] == len(results["tests"]) >= 10
    assert "Traceback" not in proc.stderr


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines", ignore=shutil.ignore_patterns(".funcpipe"))
    return tmp_path / "pipelines"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new), encoding="utf-8")


def _line(path: Path, fragment: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if fragment in line)


def test_changing_the_main_jobs_chunk_size_fails_a_shipped_test_with_a_diff(tmp_path: Path) -> None:
    pipelines = _copy(tmp_path)
    _edit(pipelines / "rag.yaml", "with: {size: 800, overlap: 100}", "with: {size: 300, overlap: 50}")

    proc = _funcpipe(str(pipelines), cwd=tmp_path)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    test_file = pipelines / "rag.test.yaml"
    chunk_count = _line(test_file, "chunk:") + 1
    assert f"rag.test.yaml:{chunk_count}:" in proc.stdout
    assert "stage chunk: count: expected" in proc.stdout
    assert "--- expected\n" in proc.stdout and "+++ actual\n" in proc.stdout
    assert "FAIL " in proc.stdout and "Traceback" not in proc.stderr


def test_changing_the_main_jobs_retry_policy_fails_a_shipped_test_with_a_diff(tmp_path: Path) -> None:
    pipelines = _copy(tmp_path)
    _edit(
        pipelines / "rag.yaml",
        "max_attempts: 5\n      backoff: {kind: exponential, initial: 200ms",
        "max_attempts: 3\n      backoff: {kind: exponential, initial: 200ms",
    )

    results = run_tests([pipelines], jobs=1)

    assert results.exit_code == 1
    failed = [c for c in results.cases if c.status == "failed"]
    assert [c.name for c in failed] == ["an embedder that keeps failing dead-letters the chunks after the last attempt"]
    messages = " | ".join(p.message for p in failed[0].problems)
    assert "attempts: expected 5, got 3" in messages and "failures" in messages and "waits differ" in messages
    waits = next(p for p in failed[0].problems if "waits" in p.message)
    assert waits.line == _line(pipelines / "rag.test.yaml", "embed: {attempts: 5")
    # Two attempts fewer, two waits fewer: the diff shows exactly those gone.
    assert waits.diff is not None
    assert [line for line in waits.diff.splitlines() if line.startswith("-- ")] == waits.diff.splitlines()[-2:]


def test_update_rewrites_the_snapshot_and_then_the_tests_pass(tmp_path: Path) -> None:
    pipelines = _copy(tmp_path)
    _edit(pipelines / "rag.yaml", "with: {size: 800, overlap: 100}", "with: {size: 300, overlap: 50}")
    test_file = pipelines / "rag.test.yaml"
    comments = [line for line in test_file.read_text(encoding="utf-8").splitlines() if line.lstrip().startswith("#")]

    updated = _funcpipe(str(pipelines), "--update", cwd=tmp_path)
    again = _funcpipe(str(pipelines), "--format", "junit", cwd=tmp_path)

    assert updated.returncode == 0, updated.stdout
    assert f"updated {test_file}" in updated.stdout
    assert again.returncode == 0, again.stdout
    suites = ET.fromstring(again.stdout)
    assert suites.get("failures") == "0" and int(suites.get("tests", "0")) == 3
    text = test_file.read_text(encoding="utf-8")
    assert [line for line in text.splitlines() if line.lstrip().startswith("#")] == comments
