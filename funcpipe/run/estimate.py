"""``funcpipe run --dry-run``: the plan, and what it will cost, without touching any service.

From what it can see locally it estimates the items reaching and leaving each
stage, the requests each external stage will make, and the least time each
stage's rate limit and concurrency allow. It opens no client, starts no
server and writes nothing.

What it sees, and how exact that is:

- ``source.files``: the files matched and their sizes (``stat`` only, never
  their content). Files over ``max_bytes`` are left out, as the run fails them.
- ``source.jsonl``: its non-blank lines, and their lengths.
- ``text.chunk``: the chunks of a file are estimated from its size alone.
  `funcpipe.stages.text.split_text` ends a chunk at the last heading,
  paragraph, sentence or line break in its window, so a chunk holds about
  `CHUNK_FILL` of ``size`` characters, and carries on average half the
  ``overlap`` (there is none after a heading or paragraph cut). On Markdown
  docs, licences and package descriptions, at sizes 200 to 1500, this was
  within 10% of the real count; sizes are bytes, so text outside ASCII, or
  cleaning that removes much whitespace, makes it high.
- Other stages pass their items on: a ``filter`` or ``map`` that drops items
  makes the later counts high.
- Requests are batches: ``ceil(items / batch size)`` (the batch size capped by
  the adapter's ``max_batch``). A batch cut short by ``max_wait`` when items
  trickle in, and retries, add requests.
- The rate bound is exact for the requests estimated: a limiter of ``n`` per
  ``per`` with ``burst`` b lets ``r`` calls through in no less than
  ``(r - b) * per / n``. The concurrency bound assumes every call takes
  ``--latency`` seconds.
- Tokens: an embedding stage reads the characters of the chunks it receives;
  at its adapter's ``chars_per_token`` (3.5 unless stated) that is its input
  tokens, and with the adapter's price, its cost (one request each at the
  request price, if any). No tokenizer is downloaded or run.
- Resuming: for a pipeline with a budget whose ledger exists, the files a
  ``source.files`` stage would skip as finished by earlier runs (same path,
  same content, same resume key) are left out, so the estimate is that of
  the run about to start. That reads and hashes the files; ``fresh`` counts
  everything. JSONL sources are always counted whole.
- Budgets: each stage's policy budget is compared with that stage's
  estimate, the spec's top-level budget with the sum over the stages it
  covers; `over_budget` says which would be exceeded, and the run refuses
  to start on it unless forced.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from funcpipe.compile import CompiledPipeline, CompiledStage, budget_summary, node_label
from funcpipe.policy.budget import DEFAULT_CHARS_PER_TOKEN, estimate_tokens
from funcpipe.policy.models import Budget
from funcpipe.run.ledger import Ledger
from funcpipe.run.report import money
from funcpipe.stages.config import ChunkConfig, FilesSourceConfig, JsonlSourceConfig
from funcpipe.stages.files import file_item_id, list_files

CHUNK_FILL = 0.85
"""The part of its window a chunk fills on average (see the module docstring)."""

CHUNK_TOLERANCE = 0.2
"""How far off a chunk count from file sizes may be: the tolerance the estimate is tested to."""


@dataclass
class StageEstimate:
    """What one stage is expected to see and do.

    Attributes:
        id: the stage id.
        use: its kind.
        adapter: ``name: provider model``, if it has an adapter.
        policy: the compact policy summary.
        batch: the stage's batching, as written.
        inputs: items reaching the stage (0 for a source).
        outputs: items it passes on.
        requests: calls to its service (external stages only).
        min_s_rate: the least seconds its rate limit allows for those requests.
        min_s_concurrency: the least seconds its concurrency allows, at the assumed latency.
        tokens: the input tokens it sends (embedding stages only).
        cost: the cost of its requests and tokens, when its adapter is priced.
        skipped: source items an earlier run finished, left out (sources only).
    """

    id: str
    use: str
    adapter: str | None
    policy: str
    batch: str | None
    inputs: int
    outputs: int
    requests: int | None
    min_s_rate: float | None
    min_s_concurrency: float | None
    tokens: int | None = None
    cost: float | None = None
    skipped: int = 0

    @property
    def min_s(self) -> float | None:
        """The tighter of the two bounds."""
        bounds = [b for b in (self.min_s_rate, self.min_s_concurrency) if b is not None]
        return max(bounds) if bounds else None


Finished = Callable[[str, str, str], bool]
"""``(source stage id, source id, content sha256) -> True`` if an earlier run finished that item."""


def _source_sizes(stage: CompiledStage, base: Path, finished: Finished | None = None) -> tuple[list[int], int]:
    """One entry per item the source will emit, its size in bytes; and how many earlier runs finished."""
    cfg = stage.config
    if isinstance(cfg, FilesSourceConfig):
        root = Path(cfg.path) if Path(cfg.path).is_absolute() else base / cfg.path
        files = [(p, p.stat().st_size) for p in list_files(root, cfg)]
        files = [(p, s) for p, s in files if s <= cfg.max_bytes]
        if finished is None:
            return [s for _, s in files], 0
        left = []
        for p, s in files:
            rel = p.relative_to(root).as_posix() if p != root else p.name
            if not finished(stage.id, file_item_id(rel), hashlib.sha256(p.read_bytes()).hexdigest()):
                left.append(s)
        return left, len(files) - len(left)
    if isinstance(cfg, JsonlSourceConfig):
        path = Path(cfg.path) if Path(cfg.path).is_absolute() else base / cfg.path
        if not path.is_file():
            return [], 0
        with path.open("rb") as fh:
            return [len(line) for line in fh if line.strip()], 0
    return [], 0


def chunk_sizes(size: int, config: ChunkConfig) -> list[int]:
    """The estimated sizes of the chunks of a text of ``size`` characters.

    A text that fits is one chunk. A longer one is cut into chunks of about
    `CHUNK_FILL` of ``config.size``, each after the first starting about half
    the overlap back.
    """
    if size <= 0:
        return []
    if size <= config.size:
        return [size]
    fill = CHUNK_FILL * config.size
    stride = fill - config.overlap / 2
    count = 1 + math.ceil((size - fill) / stride)
    total = size + (count - 1) * config.overlap / 2
    return [round(total / count)] * count


def estimate(
    pipeline: CompiledPipeline, *, latency: float = 0.1, finished: Finished | None = None
) -> list[StageEstimate]:
    """Estimate every stage, in graph order. Reads directory listings, sizes and JSONL lines only.

    Args:
        pipeline: the compiled pipeline.
        latency: assumed seconds per external call, for the concurrency bound.
        finished: tells the source items earlier runs finished, which the run
            will skip (see `finished_before`); they are left out, and the
            files are read to hash them. None counts every item.
    """
    base = pipeline.base_dir
    emitted: dict[str, list[int]] = {}
    out: list[StageEstimate] = []
    for st in pipeline.stages:
        received = [s for i in st.inputs for s in emitted[i]]
        skipped = 0
        if not st.inputs:
            sizes, skipped = _source_sizes(st, base, finished)
        elif isinstance(st.config, ChunkConfig):
            sizes = [c for s in received for c in chunk_sizes(s, st.config)]
        else:
            sizes = received
        emitted[st.id] = sizes
        requests = rate_s = conc_s = None
        if st.kind.external:
            # An external source calls once per item it emits; other stages once per batch received.
            calls_for = sizes if not st.inputs else received
            requests = math.ceil(len(calls_for) / _batch_size(pipeline, st)) if calls_for else 0
            rl = st.policy.rate_limit
            if rl is not None and requests:
                units = {1: requests, "items": len(calls_for), "tokens": sum(calls_for) // 4}[rl.cost]
                rate_s = max(0.0, units - rl.burst) * rl.per / rl.requests
            if requests:
                conc_s = requests * latency / (st.policy.concurrency or 1)
        tokens: int | None = None
        cost: float | None = None
        if st.adapter is not None and requests is not None:
            adapter = pipeline.adapters[st.adapter]
            if st.kind.embeds:
                tokens = sum(estimate_tokens(s, adapter.chars_per_token) for s in received)
            if adapter.price is not None:
                cost = adapter.price.cost(requests, tokens or 0, 0)
        lab = node_label(pipeline, st)
        batch = _batch_label(pipeline, st, lab.batch)
        out.append(
            StageEstimate(
                st.id,
                st.kind.name,
                lab.adapter,
                lab.policy,
                batch,
                len(received),
                len(sizes),
                requests,
                rate_s,
                conc_s,
                tokens,
                cost,
                skipped,
            )
        )
    return out


@contextlib.contextmanager
def finished_before(pipeline: CompiledPipeline, state_dir: Path | None = None) -> Iterator[Finished | None]:
    """What earlier runs finished, from the ledger in ``state_dir``, for a pipeline with a budget.

    Yields None when there is nothing to look up: no budget (the estimate then
    reads no file's content) or no ledger yet.
    """
    path = (state_dir or pipeline.state_dir) / "ledger.sqlite"
    if not has_budget(pipeline) or not path.is_file():
        yield None
        return
    ledger = Ledger(path, pipeline.fingerprint, "estimate")
    keys = pipeline.resume_keys
    try:
        yield lambda stage_id, source_id, content: ledger.is_done(source_id, content, keys.get(stage_id))
    finally:
        ledger.close()


def has_budget(pipeline: CompiledPipeline) -> bool:
    """True if the spec has a top-level budget or a stage's policy has one."""
    return pipeline.budget is not None or any(st.policy.budget is not None for st in pipeline.stages)


@dataclass
class BudgetCheck:
    """A budget beside the estimate of what it covers.

    Attributes:
        scope: ``run`` or ``stage <id>``.
        limit: the budget.
        requests: the requests estimated against it.
        tokens: the tokens estimated against it.
        cost: the cost estimated against it (None when nothing it covers is priced).
        over: what the estimate exceeds, in words; empty when it fits.
    """

    scope: str
    limit: Budget
    requests: int
    tokens: int
    cost: float | None
    over: list[str]


def budget_checks(pipeline: CompiledPipeline, estimates: list[StageEstimate]) -> list[BudgetCheck]:
    """Each budget of the pipeline (the run's first, then the stages') beside its estimate."""
    by_id = {e.id: e for e in estimates}
    covered: list[tuple[str, Budget, list[StageEstimate]]] = []
    if pipeline.budget is not None:
        covered.append(("run", pipeline.budget, [by_id[s.id] for s in pipeline.stages if s.run_budget]))
    for st in pipeline.stages:
        if st.policy.budget is not None:
            covered.append((f"stage {st.id}", st.policy.budget, [by_id[st.id]]))
    checks = []
    for scope, limit, ests in covered:
        requests = sum(e.requests or 0 for e in ests)
        tokens = sum(e.tokens or 0 for e in ests)
        costs = [e.cost for e in ests if e.cost is not None]
        cost = sum(costs) if costs else None
        over = []
        if limit.requests is not None and requests > limit.requests:
            over.append(f"{requests} request(s) > {limit.requests}")
        if limit.tokens is not None and tokens > limit.tokens:
            over.append(f"{tokens} token(s) > {limit.tokens}")
        if limit.cost is not None and cost is not None and cost > limit.cost:
            over.append(f"cost {money(cost)} > {money(limit.cost)}")
        checks.append(BudgetCheck(scope, limit, requests, tokens, cost, over))
    return checks


def over_budget(pipeline: CompiledPipeline, estimates: list[StageEstimate]) -> list[str]:
    """What the estimate exceeds, one entry per budget exceeded (``run budget: 120 request(s) > 100``)."""
    return [f"{c.scope} budget: {', '.join(c.over)}" for c in budget_checks(pipeline, estimates) if c.over]


def budget_refusal(pipeline: CompiledPipeline, state_dir: Path, *, fresh: bool = False) -> list[str]:
    """`over_budget` for the run about to start: what it has left to do, unless ``fresh``.

    Nothing to say when it has no budget or its sources cannot be read: a
    source that cannot be listed is the run's own checks' to report.
    """
    if not has_budget(pipeline):
        return []
    try:
        if fresh:
            return over_budget(pipeline, estimate(pipeline))
        with finished_before(pipeline, state_dir) as finished:
            return over_budget(pipeline, estimate(pipeline, finished=finished))
    except (OSError, sqlite3.Error):
        return []


def _batch_label(pipeline: CompiledPipeline, st: CompiledStage, written: str | None) -> str | None:
    """The batch as written, or the size the stage will use when it is a default or capped."""
    if not st.kind.external:
        return written
    size = _batch_size(pipeline, st)
    if st.batch is None:
        return f"batch {size} (default)" if size > 1 else written
    if st.batch.size == "auto":
        return f"batch {size} (auto)"
    if size < st.batch.size:
        return f"{written} (max_batch {size})"
    return written


def _batch_size(pipeline: CompiledPipeline, st: CompiledStage) -> int:
    cap: int | None = None
    if st.adapter:
        cap = getattr(pipeline.adapters[st.adapter].config, "max_batch", None)
    batch = st.run_batch
    size = batch.items if batch is not None else 1
    return min(size, cap) if cap else size


def least_duration(estimates: list[StageEstimate]) -> float:
    """The least time the whole run can take: its slowest external stage's bound."""
    return max((e.min_s or 0.0 for e in estimates), default=0.0)


def print_plan(pipeline: CompiledPipeline, estimates: list[StageEstimate], file: IO[str], *, latency: float) -> None:
    """Print the plan (stages, adapters, policies, batches), then the estimate, as two tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, highlight=False, width=140)
    plan = Table(title=f"funcpipe run --dry-run {pipeline.name}: nothing was called", title_justify="left")
    for col in ("stage", "use", "adapter", "batch"):
        plan.add_column(col, no_wrap=True)
    plan.add_column("policy")
    for e in estimates:
        plan.add_row(e.id, e.use, e.adapter or "-", e.batch or "-", e.policy or "-")
    console.print(plan)

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}s"

    est = Table(title="estimate", title_justify="left")
    est.add_column("stage", no_wrap=True)
    for col in ("in", "out", "requests", "tokens", "cost", "min by rate", "min by conc."):
        est.add_column(col, justify="right")
    for e in estimates:
        est.add_row(
            e.id,
            str(e.inputs),
            str(e.outputs),
            _num(e.requests),
            _num(e.tokens),
            _money(e.cost),
            secs(e.min_s_rate),
            secs(e.min_s_concurrency),
        )
    console.print(est)
    if any(e.tokens is not None for e in estimates):
        console.print(
            "tokens are estimated from characters at each adapter's chars_per_token "
            f"({DEFAULT_CHARS_PER_TOKEN:g} unless stated); costs at its price (its own, or the shipped table's)",
            soft_wrap=True,
        )
    for line in budget_lines(pipeline, estimates):
        console.print(line, soft_wrap=True)  # one line each, whatever the width: it is read and grepped
    skipped = sum(e.skipped for e in estimates)
    if skipped:
        console.print(f"{skipped} source item(s) finished by earlier runs are left out (--fresh counts them)")
    if any(isinstance(s.config, ChunkConfig) for s in pipeline.stages):
        console.print(f"chunk counts are estimated from file sizes (within about {CHUNK_TOLERANCE:.0%})")
    console.print(
        f"least duration: {least_duration(estimates):.1f}s (the slowest external stage; the concurrency bound "
        f"assumes {latency * 1000:.0f}ms per call, see --latency)"
    )


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _money(value: float | None) -> str:
    return "-" if value is None else money(value)


def budget_lines(pipeline: CompiledPipeline, estimates: list[StageEstimate]) -> list[str]:
    """One line per budget: its limits beside the estimate, and whether the run would start."""
    lines = []
    for c in budget_checks(pipeline, estimates):
        spend = f"{c.requests} request(s), {c.tokens} token(s)" + (f", {_money(c.cost)}" if c.cost is not None else "")
        verdict = f"exceeds it ({', '.join(c.over)}): `run` refuses to start unless --force" if c.over else "within it"
        lines.append(f"budget ({c.scope}): {budget_summary(c.limit)}; estimate {spend}: {verdict}")
    return lines


def to_json(pipeline: CompiledPipeline, estimates: list[StageEstimate], *, latency: float) -> dict[str, Any]:
    """The plan and estimate as a JSON-able dict.

    ``{"pipeline", "latency_s", "least_duration_s", "stages", "tokens", "cost", "budgets"}``: ``tokens`` and
    ``cost`` are the totals over the stages (``cost`` None when nothing is priced); each budget has its
    ``scope``, ``limit``, the estimate against it and what it would ``exceed``.
    """
    costs = [e.cost for e in estimates if e.cost is not None]
    return {
        "pipeline": pipeline.name,
        "latency_s": latency,
        "least_duration_s": least_duration(estimates),
        "stages": [{**asdict(e), "min_s": e.min_s} for e in estimates],
        "tokens": sum(e.tokens or 0 for e in estimates),
        "cost": sum(costs) if costs else None,
        "budgets": [
            {
                "scope": c.scope,
                "limit": c.limit.model_dump(exclude_none=True),
                "requests": c.requests,
                "tokens": c.tokens,
                "cost": c.cost,
                "exceeds": c.over,
            }
            for c in budget_checks(pipeline, estimates)
        ],
    }
