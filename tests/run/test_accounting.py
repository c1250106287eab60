"""The runner accounts for every source item exactly once: done, failed or filtered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.compile import compile_pipeline
from funcpipe.core import Item
from funcpipe.policy.clock import Clock
from funcpipe.run import Runner, RunOptions, run_pipeline
from funcpipe.run.accounting import Accounting, Failures, shorten
from funcpipe.run.redact import Redactor
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


def run_watched(text: str, tmp: Path) -> tuple[Any, dict[str, str]]:
    """Run ``text``; return the report and the outcome each settled source item was given."""
    pipeline = compile_pipeline(load_spec_text(text, base_dir=tmp))
    runner = Runner(pipeline, RunOptions(resources=no_resources, state_dir=tmp / ".funcpipe"))
    settled: dict[str, str] = {}

    def note(source_id: str, outcome: str) -> None:
        assert source_id not in settled, f"{source_id} settled twice"
        settled[source_id] = outcome

    runner.settled_hooks.append(note)
    return asyncio.run(runner.run()), settled


@pytest.mark.slow  # whole runs, 60 of them
@settings(max_examples=60, deadline=None)
@given(count=st.integers(0, 40), stages=st.lists(STAGE, max_size=5), fail_fast=st.booleans())
def test_every_source_item_read_has_exactly_one_outcome(count: int, stages: list[Any], fail_fast: bool) -> None:
    text = spec_text(count, stages) + ("on_error: {mode: fail_fast}\n" if fail_fast else "")
    with tempfile.TemporaryDirectory() as tmp:  # a fresh ledger for each example
        report, settled = run_watched(text, Path(tmp))
    ids = fs.source_ids(count)
    expected = {sid: fs.outcome(Item(sid, f"s{i}", {"n": i}, sid), stages) for i, sid in enumerate(ids)}
    acc = report.accounting
    assert acc["invariant_holds"]
    assert acc["strays"] == 0
    assert acc["sources"] == acc["done"] + acc["failed"] + acc["filtered"] + acc["unfinished"]
    # Every outcome given is the reference model's, and the counts are those outcomes.
    assert all(expected[sid] == outcome for sid, outcome in settled.items())
    assert Counter(settled.values()) == Counter({k: acc[k] for k in ("done", "failed", "filtered") if acc[k]})
    # The stage counts, the breakdown by code and the dead-letter count agree.
    stage_failed = sum(s.failed for s in report.stages)
    assert stage_failed == report.dead_lettered == sum(e.count for s in report.stages for e in s.errors)
    for s in report.stages:
        assert s.failed == sum(e.count for e in s.errors)
    any_failure = "failed" in expected.values()
    if fail_fast and any_failure:
        # Stopped at the first failure: it counts as failed, what was read and not done is unfinished.
        assert acc["failed"] == stage_failed == 1
        assert acc["sources"] <= count
        assert (report.status, report.exit_code) == ("failed", 1)
        assert "fail_fast" in (report.message or "")
    else:
        assert settled == expected
        assert acc["sources"] == count
        assert acc["unfinished"] == 0
        assert report.exit_code == (1 if any_failure else 0)


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


def test_fail_fast_counts_the_failed_item_everywhere(tmp_path: Path) -> None:
    text = spec_text(200, [("fail", fs.FailConfig(every=2, salt=0))]) + "on_error: {mode: fail_fast}\n"
    report = run_spec(text, tmp_path)
    acc = report.accounting
    assert acc["failed"] == 1 == report.stages[1].failed == report.dead_lettered
    assert [(e.code, e.count) for e in report.stages[1].errors] == [("BAD_INPUT", 1)]
    assert acc["invariant_holds"]
    assert acc["sources"] == acc["done"] + acc["failed"] + acc["filtered"] + acc["unfinished"] < 200


def test_stop_settles_failed_items_as_failed_and_the_rest_as_unfinished() -> None:
    settled: list[tuple[str, str]] = []
    acct = Accounting(["t"], ordered=False, on_settled=lambda sid, out: settled.append((sid, out)))
    for sid in "abcd":
        acct.source(sid)
    acct.committed("t", "a")
    acct.failed("b")
    acct.filtered("c")
    acct.stop()
    assert acct.counts == {"done": 0, "failed": 1, "filtered": 0, "unfinished": 3}
    assert settled == [("b", "failed")]  # unfinished items are not recorded: the next run redoes them
    assert acct.invariant_holds


def test_finish_settles_every_item_by_what_happened_to_it() -> None:
    acct = Accounting(["t"], ordered=False)
    for sid in "abcd":
        acct.source(sid)
    acct.committed("t", "a")
    acct.failed("b")
    acct.committed("t", "b")
    acct.filtered("c")
    acct.finish()
    assert acct.counts == {"done": 1, "failed": 1, "filtered": 2, "unfinished": 0}
    assert acct.invariant_holds


def test_an_event_for_no_open_source_item_breaks_the_invariant() -> None:
    acct = Accounting(["t"], ordered=True)
    for sid in "abc":
        acct.source(sid)
    acct.committed("t", "a")
    acct.committed("t", "b")  # settles a
    acct.failed("a")  # too late: a was counted done already
    acct.finish()
    assert acct.strays == 1
    assert acct.sources == sum(acct.counts.values()) == 3
    assert not acct.invariant_holds


def test_a_source_item_registered_twice_is_one_item() -> None:
    acct = Accounting(["t"], ordered=False)
    acct.source("a")
    acct.source("a")
    acct.finish()
    assert acct.sources == 1 == acct.counts["filtered"]


def test_failures_keep_a_count_and_the_first_message_per_stage_and_code() -> None:
    failures = Failures()
    for i in range(1000):
        failures.add("embed", "AUTH", f"401 Unauthorized ({i})")
    failures.add("embed", "TIMEOUT", "attempt timed out after 10s")
    failures.add("load", "BAD_INPUT", "a.bin is not valid utf-8")
    assert [(g.stage, g.code, g.count, g.first_message) for g in failures.of("embed")] == [
        ("embed", "AUTH", 1000, "401 Unauthorized (0)"),
        ("embed", "TIMEOUT", 1, "attempt timed out after 10s"),
    ]
    assert failures.total == 1002
    assert len(list(failures)) == 3


def test_failures_beyond_the_group_cap_are_counted_as_other() -> None:
    failures = Failures()
    for i in range(Failures.MAX_GROUPS + 10):
        failures.add("s", f"CODE_{i}", "m")
    groups = list(failures)
    assert len(groups) == Failures.MAX_GROUPS + 1
    assert failures.total == Failures.MAX_GROUPS + 10
    assert next(g for g in groups if g.code == "OTHER").count == 10


@given(cut=st.integers(0, 40), width=st.integers(8, 60))
def test_a_secret_never_survives_shortening(cut: int, width: int) -> None:
    secret = "sk-live-0123456789abcdef"
    failures = Failures(redact=Redactor([secret]))
    failures.MESSAGE_CHARS = width
    failures.add("embed", "AUTH", "x" * cut + secret + " refused")
    (group,) = failures
    assert len(group.first_message) <= width
    assert not any(secret[:k] in group.first_message for k in range(8, len(secret) + 1))


def test_shorten_flattens_whitespace_and_marks_the_cut() -> None:
    assert shorten("a\n  b\tc", 20) == "a b c"
    assert shorten("abcdefghij", 8) == "abcde..."
