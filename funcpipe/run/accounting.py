"""Accounting: every source item read ends as exactly one outcome.

The outcomes are ``done``, ``failed`` and ``filtered``, plus ``unfinished``
for a run that stopped early (``on_error: fail_fast``, a run error, an aborted
shutdown, an exhausted budget): an item read but neither dead-lettered nor
known to be complete when the run stopped. It is not recorded in the ledger, so the next run redoes it.
Source items never read are not counted: nothing is known about them.

Per-stage counters (in, out, failed, filtered, retries, latencies), the
failures by stage and error code, and the per-source outcomes live here. When
the graph keeps order (see `CompiledPipeline.order_preserving`), a source
item is settled as soon as an item of a later source leaves every terminal
stage, so memory stays bounded by what is in flight rather than growing with
the input.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

Outcome = str  # "done" | "failed" | "filtered" | "unfinished"

OUTCOMES: tuple[Outcome, ...] = ("done", "failed", "filtered", "unfinished")


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

    @property
    def samples(self) -> list[float]:
        """The latencies sampled so far, in seconds (at most `RESERVOIR`)."""
        return list(self._samples)

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
    unfinished: bool = False


@dataclass
class FailureGroup:
    """The failed items of one stage with one error code.

    Attributes:
        stage: the stage the items failed in.
        code: their error code (``ErrInfo.code``).
        count: how many items.
        first_message: the first one's message, redacted and shortened.
    """

    stage: str
    code: str
    count: int
    first_message: str


OTHER_CODES = "OTHER"
"""The code under which failures are counted once `Failures.MAX_GROUPS` is reached."""


class Failures:
    """Failed items by (stage, error code): a count and the first message of each.

    Only the first message of each group is kept, never all of them, so memory
    is bounded by the number of groups, itself capped by `MAX_GROUPS`
    (a plugin may invent codes).

    Args:
        redact: applied to a message before it is kept (the run's
            `funcpipe.run.redact.Redactor`). It runs before shortening, so a
            secret cut in two can never slip past it.
    """

    MAX_GROUPS = 64
    MESSAGE_CHARS = 300

    def __init__(self, redact: Callable[[str], str] = str) -> None:
        self.redact = redact
        self._groups: dict[tuple[str, str], FailureGroup] = {}

    def add(self, stage: str, code: str, message: str) -> None:
        """Count one failed item of ``stage`` with ``code``."""
        key = (stage, code)
        group = self._groups.get(key)
        if group is None and len(self._groups) >= self.MAX_GROUPS:
            key = (stage, OTHER_CODES)
            group = self._groups.get(key)
        if group is None:
            group = FailureGroup(stage, key[1], 0, shorten(self.redact(message), self.MESSAGE_CHARS))
            self._groups[key] = group
        group.count += 1

    def __iter__(self) -> Iterator[FailureGroup]:
        return iter(self._groups.values())

    def of(self, stage: str) -> list[FailureGroup]:
        """The groups of ``stage``, the largest first (first seen first among equals)."""
        return sorted((g for g in self._groups.values() if g.stage == stage), key=lambda g: -g.count)

    @property
    def total(self) -> int:
        """Failed items counted."""
        return sum(g.count for g in self._groups.values())


def shorten(text: str, limit: int) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: max(0, limit - 3)].rstrip() + "..."


class Accounting:
    """Tracks source items to their single outcome.

    A source item is registered by `source` when a source stage emits it (or
    fails it); every later event names an item still open. An event naming no
    open item (a stray: a stage that invents a ``source_id``, or an item
    settled too early) is counted, never turned into a new source item, and
    makes `invariant_holds` false.

    Args:
        terminals: ids of the stages whose outputs count as committed.
        ordered: whether the graph keeps source order (enables early settling).
        on_settled: called with ``(source_id, outcome)`` once per source item
            that ends done, failed or filtered (not for ``unfinished``: those
            are redone by the next run).
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
        self.counts: dict[Outcome, int] = dict.fromkeys(OUTCOMES, 0)
        self.skipped = 0
        self.sources = 0
        self.strays = 0
        self.stopped_early = False
        self._seq = 0
        self._watermark: dict[str, int] = {}

    def _open(self, source_id: str) -> _Source | None:
        st = self.pending.get(source_id)
        if st is None:
            self.strays += 1
        return st

    def source(self, source_id: str) -> None:
        """A source stage emitted (or failed) this source item; a repeat is a no-op."""
        if source_id not in self.pending:
            self._seq += 1
            self.sources += 1
            self.pending[source_id] = _Source(self._seq)

    def skip(self, source_id: str) -> None:
        """This source item was done in an earlier run and is skipped."""
        self.skipped += 1

    def failed(self, source_id: str) -> None:
        """Something derived from this source was dead-lettered."""
        st = self._open(source_id)
        if st is not None:
            st.failed = True

    def unfinished(self, source_id: str) -> None:
        """Part of this source was left undone on purpose (a budget refused its call): the run stops early."""
        self.stopped_early = True
        st = self._open(source_id)
        if st is not None:
            st.unfinished = True

    def filtered(self, source_id: str) -> None:
        """Something derived from this source was dropped on purpose."""
        st = self._open(source_id)
        if st is not None:
            st.filtered = True

    def committed(self, terminal: str, source_id: str) -> None:
        """An item derived from ``source_id`` left ``terminal``."""
        st = self._open(source_id)
        if st is None:
            return
        st.done = True
        if self.ordered:
            self._watermark[terminal] = st.seq
            if len(self._watermark) == len(self.terminals):
                self._settle_below(min(self._watermark.values()))

    def settle(self, source_id: str, outcome: Outcome) -> None:
        """Settle an open source item whose outcome was decided elsewhere (by a scale-out worker)."""
        if self.pending.pop(source_id, None) is None:
            self.strays += 1
            return
        self._settle(source_id, outcome)

    def _settle_below(self, seq: int) -> None:
        while self.pending:
            sid, st = next(iter(self.pending.items()))
            if st.seq >= seq:
                return
            self.pending.popitem(last=False)
            self._settle(sid, _outcome(st))

    def _settle(self, source_id: str, outcome: Outcome) -> None:
        self.counts[outcome] += 1
        if self.on_settled is not None and outcome != "unfinished":
            self.on_settled(source_id, outcome)

    def finish(self) -> None:
        """The run ended normally (every item read was drained): settle everything still pending."""
        self._settle_below(self._seq + 1)

    def stop(self) -> None:
        """The run stopped early: settle what is pending as failed if it was, else unfinished.

        An item still pending may have parts in flight or lost with the run, so
        only a dead-lettered one has a known outcome; the rest are ``unfinished``.
        """
        self.stopped_early = True
        while self.pending:
            sid, st = self.pending.popitem(last=False)
            self._settle(sid, "failed" if st.failed else "unfinished")

    @property
    def unsettled(self) -> int:
        """Source items not settled yet."""
        return len(self.pending)

    @property
    def invariant_holds(self) -> bool:
        """Every source item read ended as exactly one outcome, and no event went astray.

        ``unfinished`` is only allowed once the run stopped early.
        """
        return (
            not self.pending
            and self.strays == 0
            and sum(self.counts.values()) == self.sources
            and (self.stopped_early or self.counts["unfinished"] == 0)
        )

    def to_json(self) -> dict[str, object]:
        """The report's ``accounting`` section."""
        return {
            "sources": self.sources,
            **self.counts,
            "skipped": self.skipped,
            "unsettled": self.unsettled,
            "strays": self.strays,
            "invariant": INVARIANT,
            "invariant_holds": self.invariant_holds,
        }


def _outcome(st: _Source) -> Outcome:
    """A drained source item's outcome: failed beats unfinished, which beats done, which beats filtered."""
    if st.failed:
        return "failed"
    if st.unfinished:
        return "unfinished"
    return "done" if st.done else "filtered"


INVARIANT = "sources == done + failed + filtered + unfinished; unfinished == 0 unless the run stopped early"
