"""Failures are explained where the user looks: per stage and error code, on the terminal and in the report.

The pipeline here fails in two stages for two reasons: a user ``map`` refuses
chosen items (``USER_CODE``) and a local OpenAI-compatible server rejects the
key of every embedding request (``AUTH``), quoting the key in its message.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from funcpipe.compile import compile_pipeline
from funcpipe.core import AsyncGen, ErrInfo, Item, Result
from funcpipe.errors import RunError
from funcpipe.registry import StageKind
from funcpipe.run import RunOptions, run_pipeline
from funcpipe.run.report import ErrorCount, RunReport, StageReport, failure_lines
from funcpipe.spec import load_spec_text
from funcpipe.stages.base import StageContext, Transform
from funcpipe.stages.config import StageConfig
from tests.e2e._support import CANARY, env
from tests.fakes.servers import OpenAIServer

REPO = Path(__file__).resolve().parents[2]
N = 12
REFUSED = ("item 3", "item 7")

SPEC = """\
version: 1
name: fs
adapters:
  emb: {kind: openai, model: text-embedding-3-small, base_url: "${OPENAI_BASE_URL}"}
stages:
  - {id: load, use: source.jsonl, with: {path: items.jsonl, text_field: text}}
  - id: prep
    use: map
    with: {fn: "tests.run.test_failure_summary:refuse", kwargs: {texts: ["item 3", "item 7"]}}
  - {id: embed, use: embed, adapter: emb, batch: {size: 1}}
  - {id: out, use: sink.jsonl, with: {path: out.jsonl}}
"""


def refuse(item: Item, texts: list[str]) -> object:
    """A user map that fails on chosen texts (a USER_CODE failure)."""
    if item.data in texts:
        raise ValueError(f"refused {item.data!r}")
    return item.data


class AbortConfig(StageConfig):
    after: int = 5


def _abort(config: AbortConfig, ctx: StageContext) -> Transform:
    """Passes items on, then fails the whole run as a store that cannot go on would."""

    def transform(up: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            seen = 0
            async for r in up():
                seen += 1
                if seen > config.after:
                    raise RunError(f"stage {ctx.stage_id}: the store went away")
                yield r

        return run

    return transform


ABORT = StageKind("test.abort", AbortConfig, _abort)


def funcpipe(cwd: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    environ = env(PYTHONPATH=str(REPO), **variables)
    return subprocess.run(
        [sys.executable, "-m", "funcpipe", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        check=False,
    )


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key="the-right-key", echo_key=True, dim=64) as s:
        yield s


@pytest.fixture
def project(tmp_path: Path) -> Path:
    with (tmp_path / "items.jsonl").open("w") as fh:
        for i in range(N):
            fh.write(json.dumps({"id": i, "text": f"item {i}"}) + "\n")
    (tmp_path / "fs.yaml").write_text(SPEC)
    return tmp_path


def run(project: Path, server: OpenAIServer, *args: str) -> subprocess.CompletedProcess[str]:
    # CANARY is a wrong key: the server refuses it and quotes it back in its 401 message.
    return funcpipe(project, "run", "fs.yaml", *args, OPENAI_API_KEY=CANARY, OPENAI_BASE_URL=server.url)


def failure_block(stderr: str) -> list[str]:
    """The lines from ``failed: ...`` on, as long as they are indented rows."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("failed: "))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


def check_block(block: list[str]) -> None:
    assert block[0] == f"failed: {N} item(s) \u2192 .funcpipe/fs.dead.jsonl"
    rows = [re.split(r"\s{2,}", line.strip(), maxsplit=2) for line in block[1:]]
    assert [r[:2] for r in rows] == [["prep", "USER_CODE \u00d72"], ["embed", f"AUTH \u00d7{N - 2}"]]
    assert rows[0][2] == "ValueError: refused 'item 3' (first of 2)"
    assert "401" in rows[1][2] and "[REDACTED]" in rows[1][2] and rows[1][2].endswith(f"(first of {N - 2})")


def expected_errors(report: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
    return {s["id"]: [(e["code"], e["count"]) for e in s["errors"]] for s in report["stages"]}


def test_the_summary_lists_failures_per_stage_and_code_with_the_first_message(
    project: Path, server: OpenAIServer
) -> None:
    proc = run(project, server, "--report", "run.json")
    assert proc.returncode == 1, proc.stderr
    check_block(failure_block(proc.stderr))
    assert CANARY not in proc.stderr
    assert f"{N} source item(s): 0 done, {N} failed, 0 filtered" in proc.stderr
    for path in (project / "run.json", project / ".funcpipe" / "fs.report.json"):
        report = json.loads(path.read_text())
        assert expected_errors(report) == {
            "load": [],
            "prep": [("USER_CODE", 2)],
            "embed": [("AUTH", N - 2)],
            "out": [],
        }
        prep = next(s for s in report["stages"] if s["id"] == "prep")
        assert prep["errors"][0]["first_message"] == "ValueError: refused 'item 3'"
        assert CANARY not in path.read_text()


def test_quiet_shows_no_table_but_still_the_failures(project: Path, server: OpenAIServer) -> None:
    proc = run(project, server, "--quiet")
    assert proc.returncode == 1, proc.stderr
    check_block(failure_block(proc.stderr))
    assert "source item(s)" not in proc.stderr  # no table, no accounting line
    assert CANARY not in proc.stderr


def test_the_json_log_report_event_carries_the_breakdown(project: Path, server: OpenAIServer) -> None:
    proc = run(project, server, "--log-format", "json")
    assert proc.returncode == 1, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    report = events[-1]
    assert report["event"] == "report"
    assert expected_errors(report)["prep"] == [("USER_CODE", 2)]
    assert expected_errors(report)["embed"] == [("AUTH", N - 2)]
    embed = next(s for s in report["stages"] if s["id"] == "embed")
    assert "[REDACTED]" in embed["errors"][0]["first_message"]
    assert CANARY not in proc.stderr


def summary_counts(stderr: str) -> dict[str, int]:
    m = re.search(r"(\d+) source item\(s\): (\d+) done, (\d+) failed, (\d+) filtered(?:, (\d+) unfinished)?", stderr)
    assert m, stderr
    return {
        "sources": int(m[1]),
        "done": int(m[2]),
        "failed": int(m[3]),
        "filtered": int(m[4]),
        "unfinished": int(m[5] or 0),
    }


def test_fail_fast_summary_and_report_agree_and_the_invariant_holds(project: Path, server: OpenAIServer) -> None:
    (project / "fs.yaml").write_text(SPEC + "on_error: {mode: fail_fast}\n")
    proc = run(project, server)
    assert proc.returncode == 1, proc.stderr
    report = json.loads((project / ".funcpipe" / "fs.report.json").read_text())
    acc = report["accounting"]
    assert acc["invariant_holds"]
    # prep and embed run in their own tasks: each may dead-letter an item before the stop reaches it
    dead = report["dead_lettered"]
    assert 1 <= acc["failed"] == dead == sum(s["failed"] for s in report["stages"]) <= 2
    assert acc["sources"] == acc["done"] + acc["failed"] + acc["filtered"] + acc["unfinished"] < N
    assert summary_counts(proc.stderr) == {k: acc[k] for k in ("sources", "done", "failed", "filtered", "unfinished")}
    block = failure_block(proc.stderr)
    assert block[0] == f"failed: {dead} item(s) \u2192 .funcpipe/fs.dead.jsonl"
    shown = [re.split(r"\s{2,}", line.strip(), maxsplit=2)[:2] for line in block[1:]]
    assert shown == [[s["id"], f"{e['code']} \u00d7{e['count']}"] for s in report["stages"] for e in s["errors"]]
    assert "(on_error: fail_fast)" in report["message"]
    assert report["message"] in proc.stderr


def test_a_run_error_midway_leaves_a_true_report(tmp_path: Path) -> None:
    text = (
        "version: 1\nname: abort\nstages:\n"
        "  - {id: src, use: 'tests.run.fake_stages:SOURCE', with: {count: 40}}\n"
        "  - {id: store, use: 'tests.run.test_failure_summary:ABORT', with: {after: 5}}\n"
    )
    pipeline = compile_pipeline(load_spec_text(text, base_dir=tmp_path))
    report = asyncio.run(run_pipeline(pipeline, RunOptions(state_dir=tmp_path / ".funcpipe")))
    acc = report.accounting
    assert (report.status, report.exit_code) == ("error", 1)
    assert "the store went away" in (report.message or "")
    assert acc["invariant_holds"]
    # Six read, five committed; the fifth is not known complete until a later item commits,
    # so with the sixth it is unfinished (and redone next time, which upserts make harmless).
    assert (acc["sources"], acc["done"], acc["unfinished"], acc["failed"]) == (6, 4, 2, 0)


def test_a_run_error_midway_is_shown_with_true_counts(tmp_path: Path) -> None:
    (tmp_path / "abort.yaml").write_text(
        "version: 1\nname: abort\nstages:\n"
        "  - {id: src, use: 'tests.run.fake_stages:SOURCE', with: {count: 40}}\n"
        "  - {id: store, use: 'tests.run.test_failure_summary:ABORT', with: {after: 5}}\n"
    )
    proc = funcpipe(tmp_path, "run", "abort.yaml")
    assert proc.returncode == 1, proc.stderr
    report = json.loads((tmp_path / ".funcpipe" / "abort.report.json").read_text())
    acc = report["accounting"]
    assert acc["invariant_holds"]
    assert summary_counts(proc.stderr) == {k: acc[k] for k in ("sources", "done", "failed", "filtered", "unfinished")}
    assert "the store went away" in proc.stderr
    assert "failed: " not in proc.stderr  # no item failed: no failure summary


def report_with(errors: dict[str, list[ErrorCount]], dead: int) -> RunReport:
    stages = [
        StageReport(sid, "map", 0, 0, sum(e.count for e in errs), 0, 0, 0, None, None, None, None, errs)
        for sid, errs in errors.items()
    ]
    accounting = {"sources": 0, "done": 0, "failed": 0, "filtered": 0}
    return RunReport("p", "f", "r", "failed", 1, "t", 0.0, stages, accounting, "dead.jsonl", dead)


def test_failure_lines_align_and_cut_long_messages() -> None:
    long = "x" * 500
    report = report_with(
        {"load": [ErrorCount("BAD_INPUT", 1, "a.bin is not valid utf-8")], "embed": [ErrorCount("TIMEOUT", 12, long)]},
        13,
    )
    lines = failure_lines(report, unicode=False)
    assert lines[0] == "failed: 13 item(s) -> dead.jsonl"
    assert lines[1] == "  load   BAD_INPUT x1  a.bin is not valid utf-8"
    assert lines[2].startswith("  embed  TIMEOUT x12   xxx")
    assert lines[2].endswith("... (first of 12)")
    assert len(lines[2]) < 140


def test_no_failure_lines_when_nothing_failed() -> None:
    assert failure_lines(report_with({"load": []}, 0)) == []


SLOW_SPEC = """\
version: 1
name: slow
stages:
  - {id: load, use: source.jsonl, with: {path: items.jsonl, text_field: text}}
  - {id: count, use: map, with: {fn: "tests.run.user_fns:log_call", kwargs: {path: calls.log}}}
  - {id: work, use: map, with: {fn: "tests.run.user_fns:slow", kwargs: {seconds: 60}}, policy: {concurrency: 4}}
  - {id: out, use: sink.jsonl, with: {path: out.jsonl}}
shutdown_timeout: 10m
"""


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_aborted_run_reports_what_it_read_as_unfinished(tmp_path: Path) -> None:
    with (tmp_path / "items.jsonl").open("w") as fh:
        for i in range(50):
            fh.write(json.dumps({"id": i, "text": f"item {i}"}) + "\n")
    (tmp_path / "slow.yaml").write_text(SLOW_SPEC)
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "funcpipe", "run", "slow.yaml"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env(PYTHONPATH=str(REPO)),
        )
        try:
            calls = tmp_path / "calls.log"
            wait_until(lambda: calls.exists() and calls.read_text().count("\n") >= 1, "the first item")
            proc.send_signal(signal.SIGINT)
            wait_until(lambda: "draining" in log.read_text(), "the draining notice")
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = log.read_text()
    assert proc.returncode == 130, stderr
    report = json.loads((tmp_path / ".funcpipe" / "slow.report.json").read_text())
    acc = report["accounting"]
    assert report["status"] == "aborted"
    assert acc["invariant_holds"]
    assert acc["done"] == 0 and acc["unfinished"] == acc["sources"] >= 1
    assert summary_counts(stderr) == {k: acc[k] for k in ("sources", "done", "failed", "filtered", "unfinished")}
    assert f"{acc['unfinished']} item(s) unfinished" in report["message"]
