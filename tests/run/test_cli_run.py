"""``funcpipe run`` end to end, as a real subprocess, on small file pipelines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def funcpipe(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funcpipe", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    dst = tmp_path / "notes"
    shutil.copytree(REPO / "examples" / "notes", dst, ignore=shutil.ignore_patterns("out", ".funcpipe", "__pycache__"))
    return dst


def test_run_notes_example_writes_sink_and_report(notes: Path) -> None:
    proc = funcpipe("run", str(notes / "notes.yaml"), "--report", str(notes / "run.json"))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in (notes / "out" / "notes.jsonl").read_text().splitlines()]
    assert sorted(r["meta"]["path"] for r in rows) == ["monday.txt", "tuesday.txt"]
    monday = next(r for r in rows if r["meta"]["path"] == "monday.txt")
    assert monday["data"] == {"text": "Buy milk.\nCall Ana about the pipeline review.", "words": 8, "lines": 3}
    report = json.loads((notes / "run.json").read_text())
    assert report["accounting"] == {
        "sources": 3,
        "done": 2,
        "failed": 0,
        "filtered": 1,
        "unfinished": 0,
        "skipped": 0,
        "unsettled": 0,
        "strays": 0,
        "invariant": "sources == done + failed + filtered + unfinished; unfinished == 0 unless the run stopped early",
        "invariant_holds": True,
    }
    assert [s["id"] for s in report["stages"]] == ["load", "annotate", "keep", "out"]
    assert "3 source item(s): 2 done, 0 failed, 1 filtered" in proc.stderr


def test_user_code_exception_is_dead_lettered_with_traceback(notes: Path) -> None:
    (notes / "notes" / "boom.txt").write_text("please EXPLODE now\n")
    spec = (notes / "notes.yaml").read_text().replace("text_tools:annotate", "text_tools:explode")
    spec = spec.replace('  - {id: keep, use: filter, with: {fn: "text_tools:has_words"}}\n', "")
    (notes / "notes.yaml").write_text(spec)
    proc = funcpipe("run", str(notes / "notes.yaml"))
    assert proc.returncode == 1, proc.stderr
    dead = [json.loads(x) for x in (notes / ".funcpipe" / "notes.dead.jsonl").read_text().splitlines()]
    assert len(dead) == 1
    assert dead[0]["stage"] == "annotate"
    assert dead[0]["meta"]["path"] == "boom.txt"
    assert dead[0]["error"]["code"] == "USER_CODE"
    assert "ValueError: note boom.txt asked to explode" in dead[0]["error"]["meta"]["traceback"]
    out = [json.loads(x)["meta"]["path"] for x in (notes / "out" / "notes.jsonl").read_text().splitlines()]
    assert sorted(out) == ["empty.txt", "monday.txt", "tuesday.txt"]


def test_undecodable_file_is_bad_input_and_the_rest_flows(notes: Path) -> None:
    (notes / "notes" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    proc = funcpipe("run", str(notes / "notes.yaml"), "--log-format", "json")
    assert proc.returncode == 1
    dead = [json.loads(x) for x in (notes / ".funcpipe" / "notes.dead.jsonl").read_text().splitlines()]
    assert [(d["error"]["code"], d["meta"]["path"], d["stage"]) for d in dead] == [("BAD_INPUT", "latin1.txt", "load")]
    assert "latin1.txt is not valid utf-8" in dead[0]["error"]["msg"]
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["event"] == "report"
    assert report["accounting"]["failed"] == 1
    assert report["accounting"]["done"] == 2


def test_invalid_spec_exits_2_with_a_located_error(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("version: 1\nname: bad\nstages:\n  - {id: a, use: source.filez, with: {path: x}}\n")
    proc = funcpipe("run", str(spec))
    assert proc.returncode == 2
    assert f"{spec}:4:" in proc.stderr
    assert "did you mean 'source.files'" in proc.stderr


def test_set_overrides_a_value(notes: Path) -> None:
    proc = funcpipe("run", str(notes / "notes.yaml"), "--set", "stages[3].with.path=elsewhere.jsonl", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (notes / "elsewhere.jsonl").exists()
    assert proc.stderr == ""
