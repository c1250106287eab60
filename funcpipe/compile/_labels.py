"""What a stage's box says: its kind, adapter, policy and batch, named without secrets.

The graph renderer draws these lines and the dry-run estimate prints them,
so both show a stage the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from funcpipe.compile._graph import CompiledPipeline, CompiledStage
from funcpipe.policy.models import Budget, Policy, format_duration


def policy_summary(policy: Policy) -> str:
    """A compact policy label, e.g. ``retry ×5 · 50/s · c=8 · breaker``."""
    parts: list[str] = []
    if policy.retry is not None:
        parts.append(f"retry ×{policy.retry.max_attempts}")
    if policy.timeout is not None:
        if policy.timeout.attempt is not None:
            parts.append(f"timeout {format_duration(policy.timeout.attempt)}")
        if policy.timeout.total is not None:
            parts.append(f"deadline {format_duration(policy.timeout.total)}")
    if policy.rate_limit is not None:
        rl = policy.rate_limit
        per = "s" if rl.per == 1 else format_duration(rl.per)
        keyed = f" per {rl.key}" if rl.key else ""
        parts.append(f"{rl.requests}/{per}{keyed}")
    if policy.concurrency is not None:
        parts.append(f"c={policy.concurrency}")
    if policy.circuit_breaker is not None:
        parts.append("breaker")
    if policy.fairness is not None:
        parts.append(f"fair by {policy.fairness.key}")
    if policy.budget is not None:
        parts.append(f"budget {budget_summary(policy.budget)}")
    return " · ".join(parts)


def budget_summary(budget: Budget) -> str:
    """A compact budget label, e.g. ``100 req, 1000000 tok, $5``."""
    parts: list[str] = []
    if budget.requests is not None:
        parts.append(f"{budget.requests} req")
    if budget.tokens is not None:
        parts.append(f"{budget.tokens} tok")
    if budget.cost is not None:
        parts.append(f"${budget.cost:g}")
    return ", ".join(parts)


@dataclass(frozen=True)
class NodeLabel:
    """The lines drawn in one stage's box."""

    title: str
    kind: str
    adapter: str | None
    policy: str
    batch: str | None

    def lines(self) -> list[str]:
        """Non-empty lines, title first."""
        return [x for x in (self.title, self.kind, self.adapter, self.policy, self.batch) if x]


def node_label(pipeline: CompiledPipeline, stage: CompiledStage) -> NodeLabel:
    """What to show for ``stage``: nothing secret, only names, kinds and models."""
    adapter = None
    if stage.adapter:
        ad = pipeline.adapters.get(stage.adapter)
        if ad is not None:
            detail = ad.model or getattr(ad.config, "table", None)
            adapter = f"{stage.adapter}: {ad.kind.name}" + (f" {detail}" if detail else "")
    batch = None
    if stage.batch is not None:
        wait = f" / {format_duration(stage.batch.max_wait)}" if stage.batch.max_wait else ""
        size = stage.batch.size
        run = stage.run_batch
        shown = f"auto ({run.items})" if size == "auto" and run is not None else str(size)
        batch = f"batch {shown}{wait}"
    return NodeLabel(stage.id, stage.kind.name, adapter, policy_summary(stage.policy), batch)


__all__ = ["NodeLabel", "budget_summary", "node_label", "policy_summary"]
