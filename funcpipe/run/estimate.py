"""``funcpipe run --dry-run``: the plan, and what it will cost, without touching any service.

From what it can see locally (source file counts and sizes, JSONL line counts,
chunk settings, batch sizes) it estimates the items reaching each stage, the
requests each external stage will make, and the least time each stage's rate
limit and concurrency allow.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from funcpipe.compile import CompiledPipeline, CompiledStage
from funcpipe.render import node_label
from funcpipe.stages.config import ChunkConfig, FilesSourceConfig, JsonlSourceConfig
from funcpipe.stages.files import _list_files


@dataclass
class StageEstimate:
    """What one stage is expected to see and do."""

    id: str
    use: str
    adapter: str | None
    policy: str
    batch: str | None
    items: int
    requests: int | None
    min_s_rate: float | None
    min_s_concurrency: float | None

    @property
    def min_s(self) -> float | None:
        """The tighter of the two bounds."""
        bounds = [b for b in (self.min_s_rate, self.min_s_concurrency) if b is not None]
        return max(bounds) if bounds else None


@dataclass
class _Flow:
    sizes: list[int]  # one entry per item: its size in characters (estimated from bytes)


def _source(stage: CompiledStage, base: Path) -> _Flow:
    cfg = stage.config
    if isinstance(cfg, FilesSourceConfig):
        root = cfg.path if Path(cfg.path).is_absolute() else base / cfg.path
        return _Flow([p.stat().st_size for p in _list_files(Path(root), cfg)])
    if isinstance(cfg, JsonlSourceConfig):
        path = Path(cfg.path) if Path(cfg.path).is_absolute() else base / cfg.path
        if not path.exists():
            return _Flow([])
        with path.open("rb") as fh:
            return _Flow([len(line) for line in fh if line.strip()])
    return _Flow([])


def _chunks(size: int, cfg: ChunkConfig) -> list[int]:
    if size <= 0:
        return []
    n = max(1, math.ceil((size - cfg.overlap) / (cfg.size - cfg.overlap)))
    return [min(size, cfg.size)] * n


def estimate(pipeline: CompiledPipeline, *, latency: float = 0.1) -> list[StageEstimate]:
    """Estimate every stage, in graph order. Reads directory listings and sizes only.

    Args:
        pipeline: the compiled pipeline.
        latency: assumed seconds per external call, for the concurrency bound.
    """
    base = pipeline.loaded.base_dir
    flows: dict[str, _Flow] = {}
    out: list[StageEstimate] = []
    for st in pipeline.stages:
        if not st.inputs:
            flow = _source(st, base)
        else:
            flow = _Flow([s for i in st.inputs for s in flows[i].sizes])
            if isinstance(st.config, ChunkConfig):
                flow = _Flow([c for s in flow.sizes for c in _chunks(s, st.config)])
        flows[st.id] = flow
        items = len(flow.sizes)
        requests = rate_s = conc_s = None
        if st.kind.external:
            size = _batch_size(pipeline, st)
            requests = math.ceil(items / size) if items else 0
            rl = st.policy.rate_limit
            if rl is not None and requests:
                cost = {1: requests, "items": items, "tokens": sum(flow.sizes) // 4}[rl.cost]
                rate_s = max(0.0, cost - rl.burst) * rl.per / rl.requests
            if requests:
                conc_s = requests * latency / (st.policy.concurrency or 1)
        lab = node_label(pipeline, st)
        out.append(
            StageEstimate(st.id, st.kind.name, lab.adapter, lab.policy, lab.batch, items, requests, rate_s, conc_s)
        )
    return out


def _batch_size(pipeline: CompiledPipeline, st: CompiledStage) -> int:
    cap: int | None = None
    if st.adapter:
        cap = getattr(pipeline.adapters[st.adapter].config, "max_batch", None)
    size = st.batch.size if st.batch is not None else {"embed": 64, "vector.upsert": 256}.get(st.kind.name, 1)
    return min(size, cap) if cap else size


def print_plan(pipeline: CompiledPipeline, estimates: list[StageEstimate], file: IO[str], *, latency: float) -> None:
    """Print the plan and the estimate as tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, highlight=False, width=140)
    table = Table(title=f"funcpipe run --dry-run {pipeline.name}: nothing was called", title_justify="left")
    for col in ("stage", "use", "adapter", "policy", "batch", "items", "requests", "min by rate", "min by conc."):
        table.add_column(col, justify="right" if col in ("items", "requests") or col.startswith("min") else "left")

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}s"

    for e in estimates:
        table.add_row(
            e.id,
            e.use,
            e.adapter or "-",
            e.policy or "-",
            e.batch or "-",
            str(e.items),
            "-" if e.requests is None else str(e.requests),
            secs(e.min_s_rate),
            secs(e.min_s_concurrency),
        )
    console.print(table)
    total = max((e.min_s or 0.0 for e in estimates), default=0.0)
    console.print(
        f"least duration: {total:.1f}s (the slowest external stage; concurrency bound assumes {latency * 1000:.0f}ms "
        "per call, see --latency)"
    )


def to_json(estimates: list[StageEstimate]) -> list[dict[str, Any]]:
    """The estimates as JSON-able dicts."""
    return [{**asdict(e), "min_s": e.min_s} for e in estimates]
