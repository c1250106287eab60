"""One shard, run in a Ray worker: the same compiled pipeline, on the source items it was given.

The worker runs an ordinary `Runner` with a `Shard`: it reads the sources,
admits only its own items, and uses its own adapters, pools and client. Its
limiters and breakers are shared through the policy board. Every
`REPORT_EVERY` seconds it tells the progress board what it settled and its
counters; at the end it returns its report and its dead letters to the
driver, which writes them into the run's one file.

A worker killed mid-shard is started again by Ray (task retries): the new
attempt asks the progress board what earlier attempts finished and skips
it. Store writes are idempotent upserts by chunk id, so what a dead attempt
wrote and the new one writes again are the same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from funcpipe.compile import CompiledPipeline
from funcpipe.run._driver import drive
from funcpipe.run.accounting import StageStats
from funcpipe.run.runner import Runner, RunOptions, Shard
from funcpipe.run.scaleout._boards import StageCounters
from funcpipe.run.scaleout._ray import ActorRef, RaySharedPolicy, awaitable

__all__ = ["REPORT_EVERY", "ShardJob", "ShardResult", "counters_of", "run_shard"]

REPORT_EVERY = 0.5
"""Seconds between a worker's reports to the progress board."""

SAMPLES = 512
"""Latency samples per stage a worker returns, for the run's percentiles."""


@dataclass(frozen=True)
class ShardJob:
    """What a worker is given.

    Attributes:
        pipeline: the compiled pipeline (the same for every shard).
        shard: the shard's index.
        source_ids: the source items it owns.
        state_dir: the run's state directory (the embedded PostgreSQL server joins there).
        seed: the run's seed (each shard's own is derived from it).
        policy: the policy board actor, if any policy has a rate limit or a breaker to share.
        progress: the progress board actor.
    """

    pipeline: CompiledPipeline
    shard: int
    source_ids: tuple[str, ...]
    state_dir: Path
    seed: int
    policy: ActorRef | None
    progress: ActorRef


@dataclass
class ShardResult:
    """What a worker returns.

    Attributes:
        shard: the shard's index.
        attempt: which attempt this was (1 unless a worker died).
        report: the shard's `RunReport`, as JSON.
        dead_letters: its dead-letter records.
        samples: latency samples per stage, in seconds.
        began: when the attempt began, on the wall clock.
        seconds: how long it took.
    """

    shard: int
    attempt: int
    report: dict[str, Any]
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)
    began: float = 0.0
    seconds: float = 0.0


def counters_of(stats: dict[str, StageStats]) -> dict[str, StageCounters]:
    """The counters of each stage, as sent to the progress board."""
    return {
        stage: {
            "inputs": s.inputs,
            "outputs": s.outputs,
            "failed": s.failed,
            "filtered": s.filtered,
            "retries": s.retries,
            "calls": s.calls,
            "waits": s.waits,
            "limited": s.limited,
        }
        for stage, s in stats.items()
    }


SHARDS_DIR = "shards"
"""The directory, in the run's state directory, of the workers' scratch files."""


def run_shard(job: ShardJob) -> ShardResult:
    """Run one shard to the end (the body of the Ray task)."""
    import ray

    began = time.time()
    attempt, finished = ray.get(job.progress.begin.remote(job.shard))
    todo = frozenset(job.source_ids) - frozenset(finished)
    # Under the run's state directory, not the system's temporary one: a worker killed
    # mid-run cannot remove its scratch, and the driver removes them all at the end.
    shards_dir = job.state_dir / SHARDS_DIR
    shards_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"shard{job.shard}-", dir=shards_dir))
    try:
        dead_path = scratch / "dead.jsonl"
        notices: list[str] = []
        runner = Runner(
            job.pipeline,
            RunOptions(
                seed=job.seed + job.shard,
                state_dir=job.state_dir,
                shard=Shard(admit=todo.__contains__, dead_letter=dead_path),
                shared_policy=RaySharedPolicy(job.policy) if job.policy is not None else None,
                notify=notices.append,
            ),
        )
        settled: list[tuple[str, str]] = []
        runner.settled_hooks.append(lambda source_id, outcome: settled.append((source_id, outcome)))
        report = drive(lambda: _run_reporting(runner, job, attempt, settled, notices))
        dead = []
        if dead_path.exists():
            with dead_path.open(encoding="utf-8") as fh:
                dead = [json.loads(line) for line in fh if line.strip()]
        samples = {sid: s.samples[:SAMPLES] for sid, s in runner.stats.items() if s.samples}
        return ShardResult(job.shard, attempt, report, dead, samples, began, time.time() - began)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _run_reporting(
    runner: Runner, job: ShardJob, attempt: int, settled: list[tuple[str, str]], notices: list[str]
) -> dict[str, Any]:
    """Run the shard, telling the progress board what it settled every `REPORT_EVERY` seconds."""

    async def tell() -> None:
        batch, settled[:] = list(settled), []
        said, notices[:] = list(notices), []
        await awaitable(job.progress.report.remote(job.shard, attempt, batch, counters_of(runner.stats), said))

    async def keep_telling() -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY)
            await tell()

    async with asyncio.TaskGroup() as tg:
        teller = tg.create_task(keep_telling())
        try:
            report = await runner.run()
        finally:
            teller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await teller
    await tell()  # the last news, before the driver reads the board
    return report.to_json()
