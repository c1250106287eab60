"""The driver of a scale-out run: list once, shard, run the shards on Ray, gather one outcome.

`drive_shards` takes the place of the local wiring inside `Runner._drive`,
after the common pre-flight (credentials, source paths, the stage kinds'
prepare steps, run once here so workers never race to create a table). So
the driver keeps everything a run owns once: the ledger, the dead-letter
file, the accounting, the source sync and the report.

1. **List.** The source stages are read once, here, through the runner's
   own admission: each item is registered for accounting, checked against
   the ledger (an unchanged item done by an earlier run is skipped) and
   noted for the source sync; a read failure is dead-lettered here.
2. **Shard.** The items to do are split into ``workers`` shards by source
   id, largest first onto the lightest shard, so shards take about as long.
3. **Run.** One Ray task per shard runs the same compiled pipeline on its
   items (`funcpipe.run.scaleout._worker`). Rate limits and breakers are
   shared through the policy board actor; a worker whose process dies is
   retried by Ray and skips what its dead attempt finished.
4. **Gather.** While shards run, their counters feed the driver's live
   stage stats (the progress display reads them). At the end the
   outcomes reported by the workers settle the accounting (and the
   ledger), their dead letters go into the run's one file, and their
   failure groups and latency samples into the report.

Only then, if every shard finished, does the runner sync the stores with
the complete listing: deletion happens once, after every shard is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import shutil
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from funcpipe.core import AsyncGen, ErrInfo, Item, Ok, Result
from funcpipe.errors import RunError
from funcpipe.run.scaleout._boards import PolicyBoard, ProgressBoard, StageCounters
from funcpipe.run.scaleout._ray import awaitable, cluster_cpus, import_ray, make_actor, start_ray, stop_ray
from funcpipe.run.scaleout._worker import REPORT_EVERY, SHARDS_DIR, ShardJob, ShardResult, counters_of, run_shard
from funcpipe.stages.base import StageContext

if TYPE_CHECKING:
    from funcpipe.run.runner import Runner

__all__ = ["MAX_RETRIES", "drive_shards", "split"]

MAX_RETRIES = 3
"""How many times Ray starts a shard again after its worker process died."""


def split(weights: Mapping[str, int], shards: int) -> list[list[str]]:
    """Source ids in at most ``shards`` groups of about equal total weight (largest first, lightest group).

    Deterministic: ties are broken by source id, so the same listing always
    gives the same shards. Empty groups are dropped.
    """
    if shards < 1:
        raise ValueError(f"at least one shard is needed, got {shards}")
    groups: list[list[str]] = [[] for _ in range(shards)]
    heap = [(0, i) for i in range(shards)]
    for sid in sorted(weights, key=lambda s: (-weights[s], s)):
        load, i = heapq.heappop(heap)
        groups[i].append(sid)
        heapq.heappush(heap, (load + max(1, weights[sid]), i))
    return [g for g in groups if g]


def _weight(item: Item) -> int:
    data = item.data
    if isinstance(data, str | bytes | bytearray):
        return len(data)
    return 1


async def _list_sources(runner: Runner, contexts: Mapping[str, StageContext]) -> dict[str, int]:
    """Read every source stage once through the runner's admission; the weight of each item to do."""
    weights: dict[str, int] = {}
    for st in runner.pipeline.sources:
        transform = st.kind.load_factory()(st.config, contexts[st.id])
        listing = runner._instrument(st, transform(_nothing))
        async with contextlib.aclosing(listing()) as it:  # type: ignore[type-var]
            async for r in it:
                if isinstance(r, Ok):
                    weights[r.value.source_id] = weights.get(r.value.source_id, 0) + _weight(r.value)
    return weights


async def _no_items() -> AsyncIterator[Result[Item, ErrInfo]]:
    return
    yield  # an async generator that yields nothing


_nothing: AsyncGen[Item] = _no_items


async def drive_shards(runner: Runner, contexts: Mapping[str, StageContext]) -> bool:
    """List, shard, run the shards on Ray and gather them into ``runner``; whether every item settled.

    Raises:
        RunError: Ray is missing or unreachable, or a shard failed for good
            (its items are then unfinished, and nothing is deleted).
    """
    executor = runner.executor
    weights = await _list_sources(runner, contexts)
    if runner.stop.is_set():
        return False
    own = counters_of(runner.stats)
    for st in runner.pipeline.sources:
        own[st.id]["outputs"] = 0  # the workers count what their sources admit
    if not weights:
        return True
    started = await asyncio.to_thread(start_ray, executor.address, executor.workers)
    try:
        workers = executor.workers or cluster_cpus()
        shards = split(weights, workers)
        runner.options.notify(
            f"ray: {len(weights)} source items in {len(shards)} shards"
            + (f", {runner.acct.skipped} unchanged and skipped" if runner.acct.skipped else "")
        )
        return await _run_shards(runner, shards, own)
    finally:
        # What killed workers left behind (the others removed their own).
        shutil.rmtree(runner.state_dir / SHARDS_DIR, ignore_errors=True)
        if started:
            await asyncio.to_thread(stop_ray)


async def _run_shards(runner: Runner, shards: list[list[str]], own: dict[str, StageCounters]) -> bool:
    ray = import_ray()
    shared = any(st.policy.rate_limit or st.policy.circuit_breaker for st in runner.pipeline.stages)
    # An actor is a process of its own: none is started for policies with nothing to share.
    policy = make_actor(PolicyBoard) if shared else None
    progress = make_actor(ProgressBoard)
    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(run_shard)
    refs = [
        task.remote(
            ShardJob(
                pipeline=runner.pipeline,
                shard=i,
                source_ids=tuple(ids),
                state_dir=runner.state_dir,
                seed=runner.options.seed,
                policy=policy,
                progress=progress,
            )
        )
        for i, ids in enumerate(shards)
    ]
    pending = {awaitable(ref): i for i, ref in enumerate(refs)}
    results: list[ShardResult] = []
    errors: list[str] = []
    told = 0
    try:
        while pending:
            done, _ = await asyncio.wait(pending, timeout=REPORT_EVERY)
            for fut in done:
                shard = pending.pop(fut)
                try:
                    result: ShardResult = fut.result()
                except Exception as exc:
                    errors.append(f"shard {shard} failed: {_reason(exc)}")
                    continue
                results.append(result)
                if result.report.get("status") != "ok" and result.report.get("message"):
                    # The shard stopped as a whole (fail_fast, a service refused): so does the run.
                    errors.append(f"shard {shard} stopped: {result.report['message']}")
            told = await _refresh(runner, progress, own, told)
            if runner.stop.is_set() or (errors and runner.pipeline.fail_fast):
                break  # the shards still running are cancelled below
        told = await _refresh(runner, progress, own, told)
        outcomes: dict[str, str] = await awaitable(progress.outcomes.remote())
        attempts: dict[int, int] = await awaitable(progress.attempts.remote())
    finally:
        # Stopped or cancelled (a second signal): no shard may go on writing after the run ends.
        for fut in pending:
            ray.cancel(refs[pending[fut]], force=True)
        for actor in (policy, progress):
            if actor is not None:
                ray.kill(actor)
    _gather(runner, results, outcomes)
    finished = {r.shard: r for r in results}
    runner.executor_report = {
        "kind": "ray",
        "workers": len(shards),
        "shards": [
            {
                "shard": i,
                "sources": len(ids),
                "attempts": attempts.get(i, 0),
                "seconds": round(finished[i].seconds, 3) if i in finished else None,
            }
            for i, ids in enumerate(shards)
        ],
    }
    retried = {shard: n for shard, n in attempts.items() if n > 1}
    if retried:
        runner.options.notify(
            "ray: " + ", ".join(f"shard {s} ran {n} times (a worker died)" for s, n in sorted(retried.items()))
        )
    if errors:
        raise RunError("; ".join(errors) + "; its items are unfinished and the next run does them")
    if runner.stop.is_set():
        return False
    if runner.acct.unsettled:
        raise RunError(
            f"{runner.acct.unsettled} source items changed or vanished between the listing and their "
            "shard; they are unfinished and the next run does them"
        )
    return True


async def _refresh(runner: Runner, progress: Any, own: dict[str, StageCounters], told: int) -> int:
    """Show the workers' counters in the driver's stage stats, and their status lines; the lines seen."""
    counters: dict[str, StageCounters] = await awaitable(progress.counters.remote())
    for stage_id, stats in runner.stats.items():
        theirs = counters.get(stage_id, {})
        mine = own.get(stage_id, {})
        for name in ("inputs", "outputs", "failed", "filtered", "retries", "calls", "waits", "limited"):
            setattr(stats, name, mine.get(name, 0) + theirs.get(name, 0))
    notices: list[str] = await awaitable(progress.notices.remote(told))
    for line in notices:
        runner.options.notify(line)
    return told + len(notices)


def _gather(runner: Runner, results: list[ShardResult], outcomes: Mapping[str, str]) -> None:
    """Fold the shards' outcomes, dead letters, failure groups and latencies into the driver's run."""
    for sid, outcome in outcomes.items():
        if sid in runner.acct.pending:
            runner.acct.settle(sid, outcome)
    for result in sorted(results, key=lambda r: r.shard):
        for record in result.dead_letters:
            runner.dead.write_record(record)
        for stage in result.report.get("stages", []):
            for err in stage.get("errors", []):
                for _ in range(int(err["count"])):
                    runner.failures.add(stage["id"], err["code"], err["first_message"])
        for stage_id, samples in result.samples.items():
            stats = runner.stats.get(stage_id)
            if stats is not None:
                for seconds in samples:
                    stats.latency(seconds)


def _reason(exc: BaseException) -> str:
    """A one-line reason from a Ray task error (its cause, not Ray's wrapping)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}"
