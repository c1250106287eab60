"""Generic stages: file and JSONL sources, the JSONL and stdout sinks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from funcpipe.core import Err, Item, Ok, async_gen_empty, async_gen_from_iterable, collect
from funcpipe.stages.base import StageContext
from funcpipe.stages.config import FilesSourceConfig, JsonlSinkConfig, JsonlSourceConfig, StdoutSinkConfig
from funcpipe.stages.files import check_source_path, file_item_id, source_files, source_jsonl
from funcpipe.stages.sinks import JsonlFile, sink_jsonl, sink_stdout


def ctx(tmp: Path) -> StageContext:
    return StageContext(stage_id="s", base_dir=tmp)


def run_source(transform, tmp: Path):  # type: ignore[no-untyped-def]
    return asyncio.run(collect(transform(async_gen_empty())))


def test_files_source_reads_each_glob_in_path_order(tmp_path: Path) -> None:
    (tmp_path / "c" / "sub").mkdir(parents=True)
    (tmp_path / "c" / "b.md").write_text("bee")
    (tmp_path / "c" / "a.md").write_text("ay")
    (tmp_path / "c" / "sub" / "z.txt").write_text("zed")
    (tmp_path / "c" / "skip.md").write_text("no")
    cfg = FilesSourceConfig(path="c", glob=("*.md", "sub/*.txt"), exclude=("skip.*",))
    out = run_source(source_files(cfg, ctx(tmp_path)), tmp_path)
    items = [r.value for r in out if isinstance(r, Ok)]
    assert [(i.meta["path"], i.data) for i in items] == [("a.md", "ay"), ("b.md", "bee"), ("sub/z.txt", "zed")]
    assert all(i.id == i.source_id == file_item_id(str(i.meta["path"])) for i in items)


def test_a_file_id_survives_an_edit_but_its_content_hash_does_not(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("one")
    cfg = FilesSourceConfig(path=".", glob="*.md")
    first = run_source(source_files(cfg, ctx(tmp_path)), tmp_path)[0].value
    (tmp_path / "a.md").write_text("two")
    second = run_source(source_files(cfg, ctx(tmp_path)), tmp_path)[0].value
    assert first.id == second.id
    assert first.meta["sha256"] != second.meta["sha256"]


def test_oversized_and_undecodable_files_are_bad_input_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("x" * 100)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "ok.txt").write_text("fine")
    out = run_source(source_files(FilesSourceConfig(path=".", glob="*.txt", max_bytes=50), ctx(tmp_path)), tmp_path)
    errors = {r.error.meta["path"]: r.error for r in out if isinstance(r, Err)}
    assert set(errors) == {"big.txt", "bin.txt"}
    assert errors["big.txt"].code == errors["bin.txt"].code == "BAD_INPUT"
    assert "over max_bytes=50" in errors["big.txt"].msg
    assert "not valid utf-8" in errors["bin.txt"].msg
    assert isinstance(errors["bin.txt"].meta["item"], Item)
    assert [r.value.data for r in out if isinstance(r, Ok)] == ["fine"]


def test_bytes_mode_keeps_raw_bytes(tmp_path: Path) -> None:
    (tmp_path / "b.bin").write_bytes(b"\x00\x01")
    out = run_source(source_files(FilesSourceConfig(path=".", glob="*.bin", mode="bytes"), ctx(tmp_path)), tmp_path)
    assert out[0].value.data == b"\x00\x01"


def test_jsonl_source_ids_text_field_and_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(
        '{"key": 1, "body": "hello", "lang": "en"}\n\n{not json}\n{"key": 2, "body": 5}\n{"body": "x"}\n'
    )
    cfg = JsonlSourceConfig(path="in.jsonl", id_field="key", text_field="body")
    out = run_source(source_jsonl(cfg, ctx(tmp_path)), tmp_path)
    assert isinstance(out[0], Ok)
    assert out[0].value.data == "hello"
    assert out[0].value.meta["lang"] == "en"
    assert [r.error.msg for r in out[1:] if isinstance(r, Err)] == [
        "line 3: invalid JSON: Expecting property name enclosed in double quotes",
        "line 4: field 'body' is missing or not text (got a number)",
        "line 5: no field 'key'",
    ]


def test_jsonl_ids_are_stable_across_runs_and_files(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"k": "x", "v": 1}\n')
    (tmp_path / "b.jsonl").write_text('{"v": 2, "k": "x"}\n')
    ids = [
        run_source(source_jsonl(JsonlSourceConfig(path=f, id_field="k"), ctx(tmp_path)), tmp_path)[0].value.id
        for f in ("a.jsonl", "b.jsonl")
    ]
    assert ids[0] == ids[1]


def items(n: int) -> list[Item]:
    return [Item(f"id{i}", f"text {i}", {"n": i}, f"id{i}") for i in range(n)]


def test_jsonl_file_never_writes_an_id_twice_and_cuts_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    JsonlFile(path).write(items(3))
    with path.open("a") as fh:
        fh.write('{"id": "id3", "data": "torn')  # a crash mid-write
    again = JsonlFile(path)
    assert again.write(items(5)) == 2  # id3 and id4: the torn line was cut off
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["id0", "id1", "id2", "id3", "id4"]


def test_sink_jsonl_passes_items_on_after_writing(tmp_path: Path) -> None:
    transform = sink_jsonl(JsonlSinkConfig(path="o/out.jsonl"), ctx(tmp_path))
    out = asyncio.run(collect(transform(async_gen_from_iterable(items(4)))))
    assert [r.value.id for r in out if isinstance(r, Ok)] == ["id0", "id1", "id2", "id3"]
    assert len((tmp_path / "o" / "out.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize(("fmt", "expected"), [("text", "text 0\ntext 1\n"), ("json", None)])
def test_sink_stdout_prints_each_item(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, expected: str | None
) -> None:
    transform = sink_stdout(StdoutSinkConfig(format=fmt), ctx(tmp_path))  # type: ignore[arg-type]
    out = asyncio.run(collect(transform(async_gen_from_iterable(items(2)))))
    assert len(out) == 2
    printed = capsys.readouterr().out
    if expected is not None:
        assert printed == expected
    else:
        assert [json.loads(x)["id"] for x in printed.splitlines()] == ["id0", "id1"]


DATA = Path(__file__).parent / "data"


def test_check_source_path_names_what_would_read_nothing(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a")
    (tmp_path / "empty.jsonl").write_text("")
    missing = check_source_path(FilesSourceConfig(path="doc"), tmp_path)
    assert missing is not None and "did you mean 'docs'" in missing.message
    assert check_source_path(FilesSourceConfig(path="docs", glob="*.txt"), tmp_path) is not None
    assert check_source_path(FilesSourceConfig(path="docs", glob="*.md"), tmp_path) is None
    assert check_source_path(FilesSourceConfig(path="doc", allow_empty=True), tmp_path) is None
    assert check_source_path(JsonlSourceConfig(path="empty.jsonl"), tmp_path) is not None
    assert check_source_path(JsonlSourceConfig(path="empty.jsonl", allow_empty=True), tmp_path) is None
    assert check_source_path(JsonlSourceConfig(path="docs"), tmp_path) is not None


def test_every_bad_jsonl_line_is_bad_input_with_its_number(tmp_path: Path) -> None:
    cfg = JsonlSourceConfig(path=str(DATA / "bad_lines.jsonl"), id_field="id", text_field="text", max_line_bytes=200)
    out = run_source(source_jsonl(cfg, ctx(tmp_path)), tmp_path)
    assert [r.value.data for r in out if isinstance(r, Ok)] == ["first, after a BOM", "last one"]
    bad = [(r.error.code, r.error.meta["item"].meta["line"]) for r in out if isinstance(r, Err)]
    assert bad == [("BAD_INPUT", n) for n in (3, 4, 5, 6, 7, 8, 9, 10)]


def test_a_file_vanishing_after_listing_is_bad_input_naming_it(tmp_path: Path) -> None:
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(name)

    async def go() -> list[object]:
        it = source_files(FilesSourceConfig(path="."), ctx(tmp_path))(async_gen_empty())()
        first = await it.__anext__()
        (tmp_path / "b.txt").unlink()
        return [first, *[r async for r in it]]

    first, second = asyncio.run(go())
    assert isinstance(first, Ok) and isinstance(second, Err)
    assert (second.error.code, second.error.meta["path"]) == ("BAD_INPUT", "b.txt")
    assert "cannot read b.txt" in second.error.msg


def test_jsonl_duplicate_ids_are_refused_naming_the_first_line_however_far_back(tmp_path: Path) -> None:
    rows = [{"k": f"r{i}"} for i in range(3000)] + [{"k": "r7"}, {"k": "r2999"}, {"k": "new"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_source(source_jsonl(JsonlSourceConfig(path="in.jsonl", id_field="k"), ctx(tmp_path)), tmp_path)

    assert sum(isinstance(r, Ok) for r in out) == 3001
    refused = [r.error for r in out if not isinstance(r, Ok)]
    assert [e.meta["duplicate_of_line"] for e in refused] == [8, 3000]
    assert "line 3001: duplicate k 'r7': line 8 has the same id" in refused[0].msg
