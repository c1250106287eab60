"""`JsonlFile`: ids on disk, a torn last line cut, any other bad line refused with its file and line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from funcpipe.core import Item
from funcpipe.stages._jsonl_file import JsonlFile, JsonlFileError, default_index_path


def items(ids: range | list[int]) -> list[Item]:
    return [Item(f"id{i}", f"text {i}", {"n": i}, f"id{i}") for i in ids]


def written_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_reopening_writes_only_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    first = JsonlFile(path)
    assert first.write(items(range(3))) == 3
    assert first.write(items(range(2, 5))) == 2
    first.close()

    again = JsonlFile(path)
    assert again.write(items(range(6))) == 1
    assert written_ids(path) == [f"id{i}" for i in range(6)]
    assert default_index_path(path).exists()


def test_an_id_repeated_within_one_batch_is_written_once(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    assert JsonlFile(path).write(items([1, 2, 1])) == 2
    assert written_ids(path) == ["id1", "id2"]


def test_an_invalid_line_in_the_middle_is_an_error_naming_the_line_and_nothing_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    JsonlFile(path).write(items(range(2)))
    with path.open("a") as fh:
        fh.write('not json\n{"id": "id9"}\n')
    before = path.read_bytes()

    with pytest.raises(JsonlFileError, match=r"out\.jsonl:3: not a JSON line"):
        JsonlFile(path, tmp_path / "fresh.sqlite").write(items([5]))
    assert path.read_bytes() == before


def test_an_invalid_line_appended_after_the_indexed_part_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    JsonlFile(path).write(items(range(2)))
    with path.open("a") as fh:
        fh.write('{"id": "id2"}\n{broken\n{"id": "id3"}\n')
    before = path.read_bytes()

    with pytest.raises(JsonlFileError, match=r"out\.jsonl:4:"):
        JsonlFile(path).open()
    assert path.read_bytes() == before


def test_only_a_torn_final_line_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    JsonlFile(path).write(items(range(3)))
    with path.open("a") as fh:
        fh.write('{"id": "id3", "data": "torn')  # a crash mid-write

    assert JsonlFile(path).write(items(range(5))) == 2
    assert written_ids(path) == [f"id{i}" for i in range(5)]


def test_lines_written_but_not_yet_indexed_are_indexed_on_open(tmp_path: Path) -> None:
    # A crash between the file's fsync and the index update leaves lines the index lacks.
    path = tmp_path / "out.jsonl"
    JsonlFile(path).write(items(range(2)))
    with path.open("a") as fh:
        fh.write("".join(json.dumps({"id": f"id{i}"}) + "\n" for i in (2, 3)))

    assert JsonlFile(path).write(items(range(5))) == 1
    assert written_ids(path) == [f"id{i}" for i in range(5)]


@pytest.mark.parametrize("change", ["rewritten", "deleted", "same_size"])
def test_a_file_changed_behind_the_index_is_read_again(tmp_path: Path, change: str) -> None:
    path = tmp_path / "out.jsonl"
    JsonlFile(path).write(items(range(3)))
    if change == "rewritten":
        path.write_text(json.dumps({"id": "id1"}) + "\n")
    elif change == "deleted":
        path.unlink()
    else:
        path.write_text(path.read_text().replace("id0", "idX"))

    JsonlFile(path).write(items(range(3)))
    expected = {"rewritten": ["id1", "id0", "id2"], "deleted": ["id0", "id1", "id2"]}
    assert written_ids(path) == expected.get(change, ["idX", "id1", "id2", "id0"])


def test_a_run_with_a_bad_line_in_its_sink_stops_before_reading_and_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"k": i}) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a"}\n{"id": \n{"id": "b"}\n')
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\nname: sink\nstages:\n"
        "  - {id: load, use: source.jsonl, with: {path: in.jsonl}}\n"
        "  - {id: out, use: sink.jsonl, with: {path: out.jsonl}}\n"
    )
    before = out.read_bytes()

    proc = subprocess.run(
        [sys.executable, "-m", "funcpipe", "run", str(spec)], capture_output=True, text=True, timeout=120
    )

    assert proc.returncode == 1, proc.stderr
    assert "out.jsonl:2: not a JSON line" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.read_bytes() == before
