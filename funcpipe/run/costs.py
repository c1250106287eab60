"""A run's usage, cost and budgets: the meters its stages' calls go through, and their totals.

The runner makes one `RunCosts` per run. It gives each stage's policy
runtime a `funcpipe.policy.budget.Meter` holding the adapter's price and
ratio, and the budgets the stage's calls count against: its policy's own
``budget``, and the spec's top-level ``budget:`` when the stage calls an
embedder or a generator. It listens to the ``usage`` events those meters
report and sums them per adapter, for the report, the summary and the JSON
log. When a budget is exhausted it tells the runner, which stops the run as
SIGTERM does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from funcpipe.compile import CompiledPipeline, CompiledStage
from funcpipe.core import Usage
from funcpipe.policy.budget import Meter, Spend
from funcpipe.policy.events import Event


@dataclass
class AdapterUsage:
    """What one adapter's calls used in a run.

    Attributes:
        requests: requests sent.
        input_tokens: tokens read.
        output_tokens: tokens generated.
        provider: attempts whose figures the provider reported.
        estimated: attempts whose tokens were estimated from their characters.
        cost: their cost, when the adapter has a price.
    """

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    provider: int = 0
    estimated: int = 0
    cost: float = 0.0

    @property
    def counted(self) -> str:
        """``provider``, ``estimated``, ``mixed``, or ``none`` when no tokens were counted."""
        if self.provider and self.estimated:
            return "mixed"
        if self.provider:
            return "provider"
        return "estimated" if self.estimated else "none"


class RunCosts:
    """The meters, usage totals and budgets of one run (see the module docs).

    Args:
        pipeline: the compiled pipeline.
        on_exhausted: called once, with the reason, when the first budget is exhausted.

    Attributes:
        exhausted: why the run's spending stopped, once a budget is exhausted.
    """

    def __init__(self, pipeline: CompiledPipeline, on_exhausted: Callable[[str], None]) -> None:
        self.pipeline = pipeline
        self._on_exhausted = on_exhausted
        self.exhausted: str | None = None
        self.run_spend = Spend(pipeline.budget, "run", self._spent) if pipeline.budget is not None else None
        self.stage_spends = {
            st.id: Spend(st.policy.budget, f"stage {st.id}", self._spent)
            for st in pipeline.stages
            if st.policy.budget is not None
        }
        self._adapter_of = {st.id: st.adapter for st in pipeline.stages if st.adapter}
        self.usage: dict[str, AdapterUsage] = {}

    def _spent(self, spend: Spend) -> None:
        if self.exhausted is None and spend.exhausted is not None:
            self.exhausted = spend.exhausted
            self._on_exhausted(spend.exhausted)

    def meter(self, stage: CompiledStage) -> Meter | None:
        """The meter for ``stage``'s calls; None for a stage that calls no adapter."""
        if stage.adapter is None:
            return None
        adapter = self.pipeline.adapters[stage.adapter]
        scopes = [s for s in (self.stage_spends.get(stage.id), self.run_spend if stage.run_budget else None) if s]
        return Meter(scopes=scopes, price=adapter.price, chars_per_token=adapter.chars_per_token)

    def __call__(self, ev: Event) -> None:
        """Count a ``usage`` event against its stage's adapter."""
        if ev.kind != "usage":
            return
        name = self._adapter_of.get(ev.stage)
        if name is None:
            return
        total = self.usage.setdefault(name, AdapterUsage())
        data = ev.data
        total.requests += _int(data.get("requests"))
        total.input_tokens += _int(data.get("input_tokens"))
        total.output_tokens += _int(data.get("output_tokens"))
        counted = data.get("counted")
        if counted == "provider":
            total.provider += 1
        elif counted == "estimated":
            total.estimated += 1
        cost = data.get("cost")
        if isinstance(cost, int | float):
            total.cost += cost

    def usage_json(self) -> dict[str, dict[str, Any]]:
        """The report's ``usage``: per adapter, its requests, tokens, how they were counted and its cost."""
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(self.usage):
            u = self.usage[name]
            adapter = self.pipeline.adapters[name]
            price = adapter.price
            out[name] = {
                "kind": adapter.kind.name,
                "model": adapter.model,
                "requests": u.requests,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "counted": u.counted,
                "chars_per_token": adapter.chars_per_token,
                "price": price.model_dump() if price is not None else None,
                "cost": round(u.cost, 9) if price is not None else None,
            }
        return out

    def total_cost(self) -> float | None:
        """The run's cost: the sum over the priced adapters; None when no adapter used is priced."""
        priced = [u.cost for name, u in self.usage.items() if self.pipeline.adapters[name].price is not None]
        return round(sum(priced), 9) if priced else None

    def total(self) -> Usage:
        """Every adapter's usage together."""
        return sum((Usage(u.requests, u.input_tokens, u.output_tokens) for u in self.usage.values()), Usage())

    def budgets_json(self) -> list[dict[str, object]]:
        """The report's ``budgets``: each budget's limit, what was spent against it, and why it ran out."""
        spends = [*([self.run_spend] if self.run_spend is not None else []), *self.stage_spends.values()]
        return [s.to_json() for s in spends]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


__all__ = ["AdapterUsage", "RunCosts"]
