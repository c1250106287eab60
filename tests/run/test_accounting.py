"""The runner accounts for every source item exactly once: done, failed or filtered."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcpipe.compile import compile_pipeline
from funcpipe.core import Item
from funcpipe.policy.clock import Clock
from funcpipe.run import RunOptions, run_pipeline
from funcpipe.spec import load_spec_text
from funcpipe.stages.config import StageConfig
from tests.run import fake_stages as fs


@contextlib.asynccontextmanager
async def no_resources(_state: Path, _clock: Clock) -> AsyncIterator[Any]:
    yield None


STAGE = st.one_of(
    st.builds(lambda m: ("fan", fs.FanConfig(most=m)), st.integers(0, 3)),
    st.just(("regroup", StageConfig())),
    st.builds(lambda e, s: ("fail", fs.FailConfig(every=e, salt=s)), st.integers(1, 6), st.integers(0, 50)),
    st.builds(lambda e, s: ("drop", fs.DropConfig(every=e, salt=s)), st.integers(1, 6), st.integers(0, 50)),
)


def spec_text(count: int, stages: list[tuple[str, StageConfig]]) -> str:
    lines = [
        "version: 1",
        "name: acct",
        "stages:",
        f"  - {{id: src, use: 'tests.run.fake_stages:SOURCE', with: {{count: {count}}}}}",
    ]
    for i, (kind, cfg) in enumerate(stages):
        kind_name = {"fan": "FAN", "regroup": "REGROUP", "fail": "FAIL", "drop": "DROP"}[kind]
        lines.append(
            f"  - {{id: s{i}, use: 'tests.run.fake_stages:{kind_name}', with: {json.dumps(cfg.model_dump())}}}"
        )
    return "\n".join(lines) + "\n"


def run_spec(text: str, tmp: Path) -> Any:
    loaded = load_spec_text(text, base_dir=tmp)
    pipeline = compile_pipeline(loaded)
    return asyncio.run(run_pipeline(pipeline, RunOptions(resources=no_resources, state_dir=tmp / ".funcpipe")))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(0, 40), stages=st.lists(STAGE, max_size=5))
def test_every_source_item_has_exactly_one_outcome(tmp_path: Path, count: int, stages: list[Any]) -> None:
    report = run_spec(spec_text(count, stages), tmp_path)
    expected = {"done": 0, "failed": 0, "filtered": 0}
    for i, sid in enumerate(fs.source_ids(count)):
        expected[fs.outcome(Item(sid, f"s{i}", {"n": i}, sid), stages)] += 1
    acc = report.accounting
    assert acc["invariant_holds"]
    assert acc["sources"] == count
    assert {k: acc[k] for k in expected} == expected
    assert report.exit_code == (1 if expected["failed"] else 0)


def test_failed_items_are_dead_lettered_with_their_reason(tmp_path: Path) -> None:
    stages = [("fail", fs.FailConfig(every=3, salt=2))]
    report = run_spec(spec_text(30, stages), tmp_path)
    lines = [json.loads(x) for x in (tmp_path / ".funcpipe" / "acct.dead.jsonl").read_text().splitlines()]
    assert len(lines) == report.accounting["failed"] > 0
    for rec in lines:
        assert set(rec) >= {"id", "source_id", "data", "meta", "stage", "error", "attempts"}
        assert rec["stage"] == "s0"
        assert rec["error"]["code"] == "BAD_INPUT"
        assert rec["error"]["msg"].startswith("injected failure")
        assert fs.fails(rec["id"], stages[0][1])  # type: ignore[arg-type]


def test_fail_fast_stops_at_the_first_failure(tmp_path: Path) -> None:
    text = spec_text(200, [("fail", fs.FailConfig(every=2, salt=0))]) + "on_error: {mode: fail_fast}\n"
    report = run_spec(text, tmp_path)
    assert report.exit_code == 1
    assert report.status == "failed"
    assert "fail_fast" in (report.message or "")
    assert report.stages[1].failed == 1
    assert report.stages[0].outputs < 200


def test_stage_counts_include_fan_out(tmp_path: Path) -> None:
    report = run_spec(spec_text(50, [("fan", fs.FanConfig(most=3))]), tmp_path)
    src, fan = report.stages
    assert src.outputs == fan.inputs == 50
    expected_out = sum(fs.fan_count(sid, 3) for sid in fs.source_ids(50))
    assert fan.outputs == expected_out
    assert fan.fan_out == round(expected_out / 50, 3)
    assert fan.filtered == sum(1 for sid in fs.source_ids(50) if fs.fan_count(sid, 3) == 0)


def test_fan_out_and_fan_in_deliver_every_item_to_each_branch(tmp_path: Path) -> None:
    text = (
        "version: 1\nname: fan\nstages:\n"
        "  - {id: src, use: 'tests.run.fake_stages:SOURCE', with: {count: 25}}\n"
        "  - {id: a, use: sink.jsonl, with: {path: a.jsonl}, from: src}\n"
        "  - {id: b, use: sink.jsonl, with: {path: b.jsonl}, from: src}\n"
        "  - {id: both, use: sink.jsonl, with: {path: both.jsonl}, from: [a, b]}\n"
    )
    report = run_spec(text, tmp_path)
    assert report.exit_code == 0
    a = [json.loads(x)["id"] for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(x)["id"] for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    both = [json.loads(x)["id"] for x in (tmp_path / "both.jsonl").read_text().splitlines()]
    assert a == b == fs.source_ids(25)
    assert sorted(both) == sorted(set(a))  # the JSONL sink writes each id once
    assert report.accounting["done"] == 25
