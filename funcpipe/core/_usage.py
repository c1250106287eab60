"""Usage metering: what a provider billed for a call, reported from inside the call.

An adapter learns what a call cost only from the provider's answer (OpenAI's
``usage.prompt_tokens``, Cohere's ``meta.billed_units``...), deep inside a
plan whose result type is the port's (vectors, a generation). Rather than
widen every port's result, the adapter reports it with `report_usage` while
the plan runs, and whoever runs the plan collects it with `metering`::

    with metering() as reported:
        res = await plan()
    # reported: the Usage values the adapter reported, in order

The meter is a context variable holding a list: tasks the plan starts copy
the context, and so append to the same list. Outside a `metering` block,
`report_usage` does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    """Requests and tokens of one call (or a sum of calls).

    Attributes:
        requests: requests sent to the provider.
        input_tokens: tokens read (the prompt, or the texts embedded).
        output_tokens: tokens generated.
    """

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
        )

    @property
    def tokens(self) -> int:
        """Input and output tokens together."""
        return self.input_tokens + self.output_tokens


_METER: ContextVar[list[Usage] | None] = ContextVar("funcpipe_usage_meter", default=None)


def report_usage(*, input_tokens: int = 0, output_tokens: int = 0, requests: int = 1) -> None:
    """Report what the provider billed for one request (a no-op outside `metering`).

    Args:
        input_tokens: tokens the provider counted as read.
        output_tokens: tokens it generated.
        requests: requests this answer stands for.
    """
    meter = _METER.get()
    if meter is not None:
        meter.append(Usage(max(0, requests), max(0, input_tokens), max(0, output_tokens)))


@contextlib.contextmanager
def metering() -> Iterator[list[Usage]]:
    """Collect the usage reported by the code run inside the block, into the list yielded."""
    reported: list[Usage] = []
    token = _METER.set(reported)
    try:
        yield reported
    finally:
        _METER.reset(token)


__all__ = ["Usage", "metering", "report_usage"]
