"""One unstorable line never takes its store batch with it: real ``funcpipe run``, real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from funcpipe.adapters.memory import MemoryStore
from funcpipe.core import Err, ErrCode, Ok
from funcpipe.ports import Fingerprint, VectorRecord
from tests.e2e._support import env, fetch, funcpipe
from tests.fakes.servers import BadRequest, OpenAIServer, hashing_embed
from tests.pg import shared_dsn, unique_name

LINES = 11
NUL_TEXT, NUL_META = 3, 8
"""The 1-based lines holding ``\\u0000``: one in the text, one in a meta field."""


def write_project(root: Path, table: str, *, clean: bool) -> Path:
    lines = []
    for n in range(1, LINES + 1):
        text = f"line {n} says something about topic {n}"
        title = f"title {n}"
        if n == NUL_TEXT:
            text = "bad\u0000text " + text
        if n == NUL_META:
            title = "bad\u0000title"
        lines.append(json.dumps({"text": text, "title": title}))
    (root / "lines.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    clean_stage = "  - {id: clean, use: text.clean}\n" if clean else ""
    spec = root / "poison.yaml"
    spec.write_text(
        "version: 1\n"
        "name: poison\n"
        "adapters:\n"
        "  embedder: {kind: hashing, dim: 32}\n"
        f"  store: {{kind: pgvector, table: {table}, dsn: '${{DATABASE_URL}}', index: none}}\n"
        "stages:\n"
        "  - {id: load, use: source.jsonl, with: {path: lines.jsonl, text_field: text}}\n"
        f"{clean_stage}"
        "  - {id: embed, use: embed, adapter: embedder}\n"
        "  - {id: store, use: vector.upsert, adapter: store, batch: {size: 16}}\n"
        "on_error: {mode: continue}\n",
        encoding="utf-8",
    )
    return spec


def run(spec: Path) -> tuple[int, list[dict[str, object]], dict[str, object]]:
    report_path = spec.parent / "report.json"
    proc = funcpipe("run", str(spec), "--report", str(report_path), environ=env(DATABASE_URL=shared_dsn()))
    assert "Traceback" not in proc.stderr, proc.stderr
    dead_file = spec.parent / ".funcpipe" / "poison.dead.jsonl"
    dead = [json.loads(x) for x in dead_file.read_text().splitlines()] if dead_file.exists() else []
    return proc.returncode, dead, json.loads(report_path.read_text())


def test_without_text_clean_the_two_poison_lines_fail_alone_and_nine_are_stored(tmp_path: Path) -> None:
    table = unique_name("poison")
    code, dead, report = run(write_project(tmp_path, table, clean=False))

    assert code == 1
    rows = fetch(shared_dsn(), f"SELECT text, meta FROM {table}")
    assert len(rows) == LINES - 2
    assert sorted(json.loads(r["meta"])["line"] for r in rows) == [
        n for n in range(1, LINES + 1) if n not in (NUL_TEXT, NUL_META)
    ]
    by_line = {d["meta"]["line"]: d for d in dead}
    assert sorted(by_line) == [NUL_TEXT, NUL_META]
    for line, field in ((NUL_TEXT, "text"), (NUL_META, "meta.title")):
        error = by_line[line]["error"]
        assert by_line[line]["stage"] == "store"
        assert error["code"] == ErrCode.BAD_INPUT
        assert f"{field} holds U+0000 (NUL) at offset 3" in error["msg"]
        assert "text.clean" in error["msg"]
        assert "SQLSTATE" not in error["msg"]
    assert report["accounting"]["done"] == LINES - 2  # type: ignore[index]
    assert report["accounting"]["failed"] == 2  # type: ignore[index]
    store = next(s for s in report["stages"] if s["id"] == "store")  # type: ignore[attr-defined]
    # One batch of 11 with 2 poison items: more than one call, within the bound.
    assert 1 < store["calls"] <= 1 + 2 * 2 * 4


def test_with_text_clean_all_eleven_lines_are_stored_without_nul(tmp_path: Path) -> None:
    table = unique_name("poison")
    code, dead, _ = run(write_project(tmp_path, table, clean=True))

    assert (code, dead) == (0, [])
    rows = fetch(shared_dsn(), f"SELECT text, meta::text AS meta FROM {table}")
    assert len(rows) == LINES
    assert not any("\x00" in r["text"] or "\\u0000" in r["meta"] for r in rows)
    titles = {json.loads(r["meta"])["title"] for r in rows}
    assert "badtitle" in titles
    assert any(r["text"].startswith("badtext line 3") for r in rows)


# -- the stores' own refusal, the same for both ------------------------------------------

FP = Fingerprint("test", "m", 3)


@pytest.mark.parametrize(
    ("record", "field", "offset", "char"),
    [
        (VectorRecord("r", "s", "ab\x00c", [1, 0, 0]), "text", 2, "U+0000 (NUL)"),
        (VectorRecord("r", "s", "héllo\ud800", [1, 0, 0]), "text", 5, "U+D800 (a lone surrogate)"),
        (VectorRecord("r", "s\x00", "t", [1, 0, 0]), "source_id", 1, "U+0000 (NUL)"),
        (VectorRecord("r", "s", "t", [1, 0, 0], {"a": {"b": ["x", "y\x00"]}}), "meta.a.b[1]", 1, "U+0000 (NUL)"),
        (VectorRecord("r", "s", "t", [1, 0, 0], {"k\x00": 1}), "meta key", 1, "U+0000 (NUL)"),
        (VectorRecord("r", "s", "t", [1, 0, 0], {"é": "\udcff"}), "meta.é", 0, "U+DCFF (a lone surrogate)"),
    ],
)
async def test_both_stores_refuse_an_unstorable_record_as_bad_input_naming_where(
    record: VectorRecord, field: str, offset: int, char: str, tmp_path: Path
) -> None:
    from funcpipe.adapters.config import PgvectorConfig
    from funcpipe.adapters.pgvector import PgvectorStore
    from tests.pg import resources_for

    async with resources_for(tmp_path) as resources:
        pg = PgvectorStore(PgvectorConfig(table=unique_name("refuse"), dsn=shared_dsn(), index="none"), resources)
        for store in (pg, MemoryStore()):
            assert await store.ensure(FP)() == Ok(None)
            res = await store.upsert([VectorRecord("ok", "s", "fine", [0, 1, 0]), record])()
            assert isinstance(res, Err)
            assert res.error.code == ErrCode.BAD_INPUT
            assert f"record r: {field} holds {char} at offset {offset}" in res.error.msg
            assert (res.error.meta["field"], res.error.meta["offset"]) == (field, offset)
            assert await store.count()() == Ok(0)  # all or nothing: the batching layer isolates it


async def test_nan_in_meta_is_bad_input_not_a_crash(tmp_path: Path) -> None:
    from funcpipe.adapters.config import PgvectorConfig
    from funcpipe.adapters.pgvector import PgvectorStore
    from tests.pg import resources_for

    record = VectorRecord("r", "s", "t", [1, 0, 0], {"score": float("nan")})
    async with resources_for(tmp_path) as resources:
        pg = PgvectorStore(PgvectorConfig(table=unique_name("nan"), dsn=shared_dsn(), index="none"), resources)
        for store in (pg, MemoryStore()):
            await store.ensure(FP)()
            res = await store.upsert([record])()
            assert isinstance(res, Err)
            assert res.error.code == ErrCode.BAD_INPUT
            assert "meta.score is NaN or infinite" in res.error.msg


# -- embed: the provider refuses a request holding one text --------------------------------

FORBIDDEN = "this text breaks the model"


def refuse_forbidden(text: str, dim: int) -> list[float]:
    if FORBIDDEN in text:
        raise BadRequest(f"'$.input' is invalid: {FORBIDDEN!r} is not allowed")
    return hashing_embed(text, dim)


def test_a_request_the_provider_refuses_for_one_text_fails_only_that_chunk(tmp_path: Path) -> None:
    texts = [f"chunk number {n} about something" for n in range(10)]
    texts[6] = f"chunk 6: {FORBIDDEN}"
    (tmp_path / "lines.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    spec = tmp_path / "embed.yaml"
    spec.write_text(
        "version: 1\n"
        "name: embed\n"
        "adapters:\n"
        '  embedder: {kind: openai, model: text-embedding-3-small, dimensions: 64, base_url: "${OPENAI_BASE_URL}"}\n'
        "policies:\n"
        "  api: {retry: {max_attempts: 3, backoff: {kind: immediate}}, circuit_breaker: {}}\n"
        "stages:\n"
        "  - {id: load, use: source.jsonl, with: {path: lines.jsonl, text_field: text}}\n"
        "  - {id: embed, use: embed, adapter: embedder, policy: api, batch: {size: 16}}\n"
        "  - {id: out, use: sink.jsonl, with: {path: out.jsonl}}\n"
        "on_error: {mode: continue}\n",
        encoding="utf-8",
    )
    with OpenAIServer(api_key="sk-test", dim=64, embed_fn=refuse_forbidden) as server:
        proc = funcpipe("run", str(spec), environ=env(OPENAI_BASE_URL=server.url, OPENAI_API_KEY="sk-test"))
        statuses = dict(server.statuses)

    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    out = [json.loads(x)["data"]["text"] for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(out) == sorted(t for t in texts if FORBIDDEN not in t)
    [dead] = [json.loads(x) for x in (tmp_path / ".funcpipe" / "embed.dead.jsonl").read_text().splitlines()]
    assert (dead["stage"], dead["data"], dead["error"]["code"]) == ("embed", texts[6], ErrCode.SERVICE_SPECIFIC)
    assert "400" in dead["error"]["msg"]
    # Refused (a 400 is never retried): 0-9, 5-9, 5-6 and 6 alone; answered: 0-4, 7-9 and 5.
    assert (statuses[400], statuses[200]) == (4, 3)
