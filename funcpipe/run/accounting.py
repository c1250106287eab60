"""Accounting: every source item ends as exactly one of done, failed or filtered.

Per-stage counters (in, out, failed, filtered, retries, latencies) and the
per-source ledger of outcomes live here. When the graph keeps order (see
`CompiledPipeline.order_preserving`), a source item is settled as soon as an
item of a later source leaves every terminal stage, so memory stays bounded by
what is in flight rather than growing with the input.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Outcome = str  # "done" | "failed" | "filtered"


@dataclass
class StageStats:
    """Counters for one stage."""

    inputs: int = 0
    outputs: int = 0
    failed: int = 0
    filtered: int = 0
    retries: int = 0
    calls: int = 0
    waits: int = 0
    limited: int = 0
    first_at: float | None = None
    last_at: float | None = None
    _samples: list[float] = field(default_factory=list)
    _seen: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    RESERVOIR = 4096

    def latency(self, seconds: float) -> None:
        """Record one external call's latency (reservoir-sampled: bounded memory)."""
        self._seen += 1
        if len(self._samples) < self.RESERVOIR:
            self._samples.append(seconds)
        else:
            j = self._rng.randrange(self._seen)
            if j < self.RESERVOIR:
                self._samples[j] = seconds

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of recorded latencies, or None."""
        if not self._samples:
            return None
        s = sorted(self._samples)
        return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]

    def touch(self, now: float) -> None:
        """Note activity at ``now`` (for the rate)."""
        if self.first_at is None:
            self.first_at = now
        self.last_at = now


@dataclass
class _Source:
    seq: int
    done: bool = False
    failed: bool = False
    filtered: bool = False


class Accounting:
    """Tracks source items to their single outcome.

    Args:
        terminals: ids of the stages whose outputs count as committed.
        ordered: whether the graph keeps source order (enables early settling).
        on_settled: called with ``(source_id, outcome)`` once per source item.
    """

    def __init__(
        self,
        terminals: Iterable[str],
        *,
        ordered: bool,
        on_settled: Callable[[str, Outcome], None] | None = None,
    ) -> None:
        self.terminals = tuple(terminals)
        self.ordered = ordered and len(self.terminals) >= 1
        self.on_settled = on_settled
        self.pending: OrderedDict[str, _Source] = OrderedDict()
        self.counts: dict[Outcome, int] = {"done": 0, "failed": 0, "filtered": 0}
        self.skipped = 0
        self.sources = 0
        self._seq = 0
        self._watermark: dict[str, int] = {}

    def _get(self, source_id: str) -> _Source:
        st = self.pending.get(source_id)
        if st is None:
            self._seq += 1
            self.sources += 1
            st = _Source(self._seq)
            self.pending[source_id] = st
        return st

    def source(self, source_id: str) -> None:
        """A source stage emitted this source item."""
        self._get(source_id)

    def skip(self, source_id: str) -> None:
        """This source item was done in an earlier run and is skipped."""
        self.skipped += 1

    def failed(self, source_id: str) -> None:
        """Something derived from this source was dead-lettered."""
        self._get(source_id).failed = True

    def filtered(self, source_id: str) -> None:
        """Something derived from this source was dropped on purpose."""
        self._get(source_id).filtered = True

    def committed(self, terminal: str, source_id: str) -> None:
        """An item derived from ``source_id`` left ``terminal``."""
        st = self._get(source_id)
        st.done = True
        if self.ordered:
            self._watermark[terminal] = st.seq
            if len(self._watermark) == len(self.terminals):
                self._settle_below(min(self._watermark.values()))

    def _settle_below(self, seq: int) -> None:
        while self.pending:
            sid, st = next(iter(self.pending.items()))
            if st.seq >= seq:
                return
            self.pending.popitem(last=False)
            self._settle(sid, st)

    def _settle(self, source_id: str, st: _Source) -> None:
        outcome: Outcome = "failed" if st.failed else "done" if st.done else "filtered"
        self.counts[outcome] += 1
        if self.on_settled is not None:
            self.on_settled(source_id, outcome)

    def finish(self) -> None:
        """The run ended normally: settle everything still pending."""
        while self.pending:
            sid, st = self.pending.popitem(last=False)
            self._settle(sid, st)

    @property
    def unsettled(self) -> int:
        """Source items not settled yet."""
        return len(self.pending)

    @property
    def invariant_holds(self) -> bool:
        """Every source item seen ended as exactly one of done, failed, filtered."""
        return not self.pending and sum(self.counts.values()) == self.sources
