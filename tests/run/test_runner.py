"""The runner's lifecycle pieces: graph wiring, stage needs, shutdown and report building.

Everything runs in memory (a memory store, the hashing embedder, fake
stages): no server, no network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from funcpipe.adapters.config import AdapterConfig
from funcpipe.adapters.memory import MemoryStore
from funcpipe.compile import CompiledPipeline, CompiledStage, compile_pipeline
from funcpipe.core import AsyncGen, AsyncPlan, Err, ErrCode, ErrInfo, Item, Ok, Result
from funcpipe.policy.clock import Clock
from funcpipe.ports import Fingerprint, VectorRecord, VectorStorePort
from funcpipe.registry import AdapterKind
from funcpipe.run import Runner, RunOptions
from funcpipe.run.accounting import Accounting, Failures, StageStats
from funcpipe.run.report import RunReport
from funcpipe.run.reporting import build_report, write_report
from funcpipe.run.shutdown import Shutdown
from funcpipe.run.wiring import tee, wire
from funcpipe.spec import load_spec_text
from tests.run import fake_stages as fs

# -- a memory store that records what it is asked ------------------------------

CALLS: list[str] = []


class CountingConfig(AdapterConfig):
    """A memory store that records every ensure and upsert in `CALLS`."""


class CountingStore(MemoryStore):
    def ensure(self, fingerprint: Fingerprint) -> AsyncPlan[None]:
        inner = super().ensure(fingerprint)

        async def run() -> Result[None, ErrInfo]:
            CALLS.append(f"ensure {fingerprint.kind} {fingerprint.dim}")
            return await inner()

        return run

    def upsert(self, records: list[VectorRecord]) -> AsyncPlan[int]:
        inner = super().upsert(records)

        async def run() -> Result[int, ErrInfo]:
            CALLS.append(f"upsert {len(records)}")
            return await inner()

        return run


COUNTING = AdapterKind("counting", CountingConfig, (VectorStorePort,), lambda _cfg, _res: CountingStore())


@contextlib.asynccontextmanager
async def no_resources(_state: Path, _clock: Clock) -> AsyncIterator[Any]:
    yield None


RAG = """
version: 1
name: needs
adapters:
  emb: {kind: hashing, dim: 16}
  store: {kind: 'tests.run.test_runner:COUNTING'}
stages:
  - {id: load, use: source.jsonl, with: {path: docs.jsonl}}
  - {id: embed, use: embed, adapter: emb}
  - {id: store, use: vector.upsert, adapter: store, batch: {size: 2}}
"""


def _rag(tmp_path: Path, lines: int = 5) -> CompiledPipeline:
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(lines)))
    return compile_pipeline(load_spec_text(RAG, base_dir=tmp_path))


def test_a_store_is_prepared_once_for_its_embedder_before_any_write(tmp_path: Path) -> None:
    CALLS.clear()
    pipeline = _rag(tmp_path)
    assert pipeline.stage("store").embedder == "emb"
    report = asyncio.run(Runner(pipeline, RunOptions(resources=no_resources, fresh=True)).run())
    assert report.status == "ok", report.message
    assert CALLS[0] == "ensure hashing 16"
    assert CALLS.count("ensure hashing 16") == 1
    assert [c for c in CALLS if c.startswith("upsert")] == ["upsert 2", "upsert 2", "upsert 1"]


def test_a_failed_prepare_step_stops_the_run_before_any_source_is_read(tmp_path: Path) -> None:
    CALLS.clear()

    class Refusing(CountingStore):
        def ensure(self, fingerprint: Fingerprint) -> AsyncPlan[None]:
            async def run() -> Result[None, ErrInfo]:
                return Err(ErrInfo(ErrCode.SERVICE_SPECIFIC, "another embedder wrote this table"))

            return run

    pipeline = _rag(tmp_path)
    refusing = AdapterKind("counting", CountingConfig, (VectorStorePort,), lambda _c, _r: Refusing())
    adapters = {**pipeline.adapters, "store": replace(pipeline.adapters["store"], kind=refusing)}
    pipeline = replace(pipeline, adapters=adapters)
    report = asyncio.run(Runner(pipeline, RunOptions(resources=no_resources, fresh=True)).run())
    assert report.exit_code == 1
    assert "stage store: cannot prepare adapter 'store': SERVICE_SPECIFIC" in (report.message or "")
    assert report.stages[0].outputs == 0
    assert CALLS == []


# -- wiring -------------------------------------------------------------------

GRAPH = """
version: 1
name: wiring
stages:
  - {id: src, use: 'tests.run.fake_stages:SOURCE', with: {count: 7}}
  - {id: a, use: 'tests.run.fake_stages:REGROUP', from: src}
  - {id: b, use: 'tests.run.fake_stages:REGROUP', from: src}
  - {id: both, use: 'tests.run.fake_stages:REGROUP', from: [a, b]}
  - {id: side, use: 'tests.run.fake_stages:REGROUP', from: a}
"""


def _passthrough(seen: list[str]) -> Any:
    def build(st: CompiledStage, upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        seen.append(st.id)
        if not st.inputs:
            items = [Item(sid, sid, {}, sid) for sid in fs.source_ids(7)]

            async def source() -> AsyncIterator[Result[Item, ErrInfo]]:
                for it in items:
                    yield Ok(it)

            return source
        return upstream

    return build


@pytest.mark.parametrize("buffer", [1, 64])
def test_wiring_tees_fan_out_merges_fan_in_and_tags_terminals(tmp_path: Path, buffer: int) -> None:
    pipeline = compile_pipeline(load_spec_text(GRAPH, base_dir=tmp_path))
    built: list[str] = []

    async def drain() -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        async with asyncio.TaskGroup() as tg:
            final = wire(pipeline, tg, _passthrough(built), buffer=buffer)
            async for r in final():
                assert isinstance(r, Ok)
                out.append((r.value[0], r.value[1].id))
        return out

    out = asyncio.run(drain())
    ids = fs.source_ids(7)
    assert built == [s.id for s in pipeline.stages]
    assert sorted(i for t, i in out if t == "both") == sorted(ids * 2)  # src reaches both through a and b
    assert sorted(i for t, i in out if t == "side") == sorted(ids)
    assert {t for t, _ in out} == {"both", "side"}


def test_a_failing_stream_reaches_every_branch_of_its_tee() -> None:
    async def broken() -> AsyncIterator[Result[Item, ErrInfo]]:
        yield Ok(Item("x", "x", {}, "x"))
        raise RuntimeError("source broke")

    async def drain() -> list[str]:
        errors: list[str] = []

        async def read(branch: AsyncGen[Item]) -> None:
            try:
                async for _ in branch():
                    pass
            except RuntimeError as exc:
                errors.append(str(exc))

        async with asyncio.TaskGroup() as tg:
            branches = tee(tg, broken, 3, 1)
            for b in branches:
                tg.create_task(read(b))
        return errors

    assert asyncio.run(drain()) == ["source broke"] * 3


# -- shutdown -----------------------------------------------------------------


def test_the_first_signal_stops_sources_and_the_second_aborts_once() -> None:
    notices: list[str] = []

    async def scenario() -> tuple[Shutdown, bool]:
        shutdown = Shutdown(60.0, notices.append, lambda: 3)
        task = asyncio.create_task(asyncio.sleep(3600))
        shutdown.on_signal(signal.SIGTERM, task)
        stopped = shutdown.stop.is_set()
        assert shutdown.outcome(0) == (
            "interrupted",
            "stopped by SIGTERM after draining in-flight work; run again to resume",
            128 + int(signal.SIGTERM),
        )
        shutdown.on_signal(signal.SIGINT, task)
        shutdown.abort(task, "again")  # a later abort changes nothing
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return shutdown, stopped

    shutdown, stopped = asyncio.run(scenario())
    assert stopped
    assert shutdown.signal is signal.SIGTERM
    assert shutdown.aborted == "a second SIGINT"
    assert notices[0].startswith("funcpipe: SIGTERM: stopped reading sources; draining 3 in-flight item(s)")
    assert notices[-1] == "funcpipe: second SIGINT: aborting now"
    status, message, code = shutdown.outcome(2) or ("", "", 0)
    assert (status, code) == ("aborted", 128 + int(signal.SIGTERM))
    assert message == "aborted by a second SIGINT: 2 item(s) unfinished; run again to resume"


def test_a_run_no_signal_stopped_has_no_shutdown_outcome() -> None:
    async def scenario() -> Shutdown:
        return Shutdown(1.0, print, lambda: 0)

    assert asyncio.run(scenario()).outcome(0) is None


# -- reports ------------------------------------------------------------------


def _report(tmp_path: Path) -> RunReport:
    pipeline = compile_pipeline(load_spec_text(GRAPH, base_dir=tmp_path))
    stats = {s.id: StageStats() for s in pipeline.stages}
    stats["src"].outputs = stats["a"].inputs = 7
    stats["a"].outputs = 14
    failures = Failures()
    failures.add("a", "BAD_INPUT", "no text")
    acct = Accounting([t.id for t in pipeline.terminals], ordered=False)
    return build_report(
        pipeline,
        run_id="r1",
        started=datetime(2026, 1, 1, tzinfo=UTC),
        duration=2.0,
        status="ok",
        exit_code=0,
        message=None,
        stats=stats,
        failures=failures,
        acct=acct,
        deleted={"sources": 1, "chunks": 4},
        dead_letter=tmp_path / "d.jsonl",
        dead_lettered=0,
        sync=[],
    )


def test_a_report_is_built_from_the_counters_in_graph_order(tmp_path: Path) -> None:
    report = _report(tmp_path)
    assert [s.id for s in report.stages] == ["src", "a", "b", "both", "side"]
    a = report.stages[1]
    assert (a.inputs, a.outputs, a.fan_out, a.items_per_s) == (7, 14, 2.0, 7.0)
    assert [(e.code, e.count) for e in a.errors] == [("BAD_INPUT", 1)]
    assert report.accounting["deleted"] == 1 and report.accounting["deleted_chunks"] == 4
    assert report.dead_letter is None  # nothing was dead-lettered
    assert report.fingerprint and report.pipeline == "wiring"


def test_a_report_that_cannot_be_written_is_told_and_fails_the_run(tmp_path: Path) -> None:
    report = _report(tmp_path)
    good = tmp_path / "good.json"
    blocked = tmp_path / "file"
    blocked.write_text("")
    write_report(report, [good, blocked / "report.json"], lambda s: s.replace("file", "f***"))
    assert report.exit_code == 1
    assert report.message is not None and "the report could not be written to" in report.message
    assert "f***" in report.message  # the message went through the redactor
    assert json.loads(good.read_text())["exit_code"] == 1  # the written copy says so too
