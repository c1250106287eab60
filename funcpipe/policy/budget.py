"""The budget interpreter: usage counted per call, priced, and held against budgets.

A `Spend` holds one budget's counters. A stage's ``policy.budget`` gets a
`Spend` of its own; the spec's top-level ``budget:`` is one `Spend` shared by
the runtimes of every stage it covers. A `Meter` belongs to one
`funcpipe.policy.PolicyRuntime`: it knows the adapter's price and its
characters-per-token ratio, and around every attempt it

1. estimates the call's tokens from its characters at the stated ratio,
   raised when the provider counted more for earlier calls of this run (the
   estimate learns a denser tokenizer, and never drops below the stated
   ratio's, so a budget check errs on the side of stopping early);
2. admits the call only if it fits every budget it is held against, holding
   its estimate (one request, the tokens, their cost) so that concurrent
   calls cannot together cross a limit. A call that would cross is refused
   with ``BUDGET_EXHAUSTED`` and never started;
3. settles the call with its real usage: what the adapter reported with
   `funcpipe.core.report_usage` (``counted: provider``), else the estimate
   (``counted: estimated``). A failed attempt still counts its request, and
   no tokens.

A budget is exhausted when a call is refused, or when what is spent reaches
one of its limits; its owner is told once (the runner then stops the run).
A request budget of N therefore lets at most N requests start. A token or
cost budget is checked against estimates: when the provider counts more
tokens than estimated, the last call may overshoot by that difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from funcpipe.core import ErrCode, ErrInfo, Usage
from funcpipe.policy.models import Budget, Price

DEFAULT_CHARS_PER_TOKEN = 3.5
"""Characters per token assumed where a provider's count is not known yet.

English prose runs about 4 characters per token with OpenAI's tokenizers and
about 3.2 with Llama's on Markdown; 3.5 sits between, erring towards more
tokens, which keeps budget checks on the safe side."""

Counted = Literal["provider", "estimated", "none"]
"""Where a usage figure comes from: the provider's answer, the characters-per-token ratio, or nothing to count."""


def estimate_tokens(chars: int, chars_per_token: float) -> int:
    """Tokens in ``chars`` characters of text at ``chars_per_token``: at least 1 for any text."""
    if chars <= 0:
        return 0
    return max(1, math.ceil(chars / chars_per_token))


class Spend:
    """The counters of one budget, shared by every runtime it covers.

    Args:
        limit: the budget.
        scope: what it covers, for messages: ``run`` or ``stage <id>``.
        on_exhausted: told once, with this `Spend`, when the budget is exhausted.

    Attributes:
        spent: the usage counted so far.
        cost: the cost counted so far.
        exhausted: why the budget is exhausted, once it is.
    """

    def __init__(self, limit: Budget, scope: str, on_exhausted: Callable[[Spend], None] | None = None) -> None:
        self.limit = limit
        self.scope = scope
        self.on_exhausted = on_exhausted
        self.spent = Usage()
        self.cost = 0.0
        self.exhausted: str | None = None
        self._held_requests = 0
        self._held_tokens = 0
        self._held_cost = 0.0

    def __repr__(self) -> str:
        return f"Spend({self.scope!r}, spent={self.spent}, cost={self.cost:g}, exhausted={self.exhausted is not None})"

    def crossing(self, tokens: int, cost: float) -> str | None:
        """Why one more request of ``tokens`` and ``cost`` would cross the budget, or None if it fits."""
        lim = self.limit
        requests = self.spent.requests + self._held_requests
        if lim.requests is not None and requests + 1 > lim.requests:
            return f"the {self.scope} budget of {lim.requests} request(s) is spent ({requests} sent)"
        used = self.spent.tokens + self._held_tokens
        if lim.tokens is not None and used + tokens > lim.tokens:
            return (
                f"the next call (about {tokens} token(s)) would cross the {self.scope} budget of "
                f"{lim.tokens} token(s) ({used} used)"
            )
        spent = self.cost + self._held_cost
        if lim.cost is not None and cost > 0 and spent + cost > lim.cost:
            return (
                f"the next call (about ${cost:.6g}) would cross the {self.scope} budget of "
                f"${lim.cost:g} (${spent:.6g} spent)"
            )
        return None

    def hold(self, tokens: int, cost: float) -> None:
        """Hold one request's estimate until it is settled."""
        self._held_requests += 1
        self._held_tokens += tokens
        self._held_cost += cost

    def settle(self, held_tokens: int, held_cost: float, usage: Usage, cost: float) -> None:
        """Replace a held estimate by the call's real ``usage`` and ``cost``."""
        self._held_requests -= 1
        self._held_tokens -= held_tokens
        self._held_cost -= held_cost
        self.spent += usage
        self.cost += cost
        lim = self.limit
        if lim.requests is not None and self.spent.requests >= lim.requests:
            self.exhaust(f"the {self.scope} budget of {lim.requests} request(s) is spent")
        elif lim.tokens is not None and self.spent.tokens >= lim.tokens:
            self.exhaust(f"the {self.scope} budget of {lim.tokens} token(s) is spent")
        elif lim.cost is not None and self.cost >= lim.cost:
            self.exhaust(f"the {self.scope} budget of ${lim.cost:g} is spent")

    def exhaust(self, reason: str) -> None:
        """Mark the budget exhausted (the first reason stays) and tell its owner once."""
        if self.exhausted is not None:
            return
        self.exhausted = reason
        if self.on_exhausted is not None:
            self.on_exhausted(self)

    def to_json(self) -> dict[str, object]:
        """``{"scope", "limit", "spent", "exhausted"}`` for the report."""
        return {
            "scope": self.scope,
            "limit": self.limit.model_dump(exclude_none=True),
            "spent": {
                "requests": self.spent.requests,
                "tokens": self.spent.tokens,
                "cost": round(self.cost, 9),
            },
            "exhausted": self.exhausted,
        }


@dataclass(slots=True)
class Hold:
    """An admitted call's estimate, held against its budgets until it is settled."""

    chars: int | None
    tokens: int
    cost: float


@dataclass(frozen=True, slots=True)
class Settled:
    """One settled call: its usage, where the figures come from, and its cost."""

    usage: Usage
    counted: Counted
    cost: float

    def to_data(self) -> dict[str, object]:
        """The ``usage`` event's data: requests, tokens, where they come from, and cost."""
        u = self.usage
        return {
            "requests": u.requests,
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "counted": self.counted,
            "cost": self.cost,
        }


@dataclass
class Meter:
    """Counts, prices and budgets the calls of one policy runtime (see the module docs).

    Args:
        scopes: the budgets the calls are held against (the stage's, the run's).
        price: the adapter's price, if known.
        chars_per_token: the adapter's stated ratio for estimates.
    """

    scopes: Sequence[Spend] = ()
    price: Price | None = None
    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    _estimated: int = field(default=0, init=False)
    _reported: int = field(default=0, init=False)

    def estimate(self, chars: int | None) -> int:
        """The tokens of a call reading ``chars`` characters: raised to the provider's own ratio when denser."""
        if chars is None:
            return 0
        raw = estimate_tokens(chars, self.chars_per_token)
        if raw and self._reported > self._estimated > 0:
            return math.ceil(raw * self._reported / self._estimated)
        return raw

    def admit(self, chars: int | None) -> Hold | ErrInfo:
        """Hold the call's estimate against every budget, or why it may not start (``BUDGET_EXHAUSTED``)."""
        tokens = self.estimate(chars)
        cost = self.price.cost(1, tokens, 0) if self.price is not None else 0.0
        for spend in self.scopes:
            reason = spend.exhausted or spend.crossing(tokens, cost)
            if reason is not None:
                spend.exhaust(reason)
                return ErrInfo(
                    ErrCode.BUDGET_EXHAUSTED,
                    f"not started: {reason}",
                    {"budget": spend.scope, "estimated_tokens": tokens},
                )
        for spend in self.scopes:
            spend.hold(tokens, cost)
        return Hold(chars, tokens, cost)

    def settle(self, hold: Hold, reported: Sequence[Usage], ok: bool) -> Settled:
        """Count a finished attempt: the provider's figures if it reported any, else the estimate."""
        if reported:
            usage = sum(reported, Usage())
            if usage.requests == 0:
                usage = Usage(1, usage.input_tokens, usage.output_tokens)
            counted: Counted = "provider"
            if hold.chars is not None and hold.chars > 0 and usage.input_tokens > 0:
                # Learn the tokenizer's real ratio from the provider's own counts.
                self._estimated += estimate_tokens(hold.chars, self.chars_per_token)
                self._reported += usage.input_tokens
        elif ok and hold.chars is not None:
            usage, counted = Usage(1, hold.tokens, 0), "estimated"
        else:
            usage, counted = Usage(1, 0, 0), "none"
        cost = self.price.cost(usage.requests, usage.input_tokens, usage.output_tokens) if self.price else 0.0
        for spend in self.scopes:
            spend.settle(hold.tokens, hold.cost, usage, cost)
        return Settled(usage, counted, cost)


__all__ = ["DEFAULT_CHARS_PER_TOKEN", "Counted", "Hold", "Meter", "Spend", "estimate_tokens"]
