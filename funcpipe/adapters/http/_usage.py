"""Usage a provider reports in its answer, passed on to the meter of the call (`funcpipe.core.report_usage`)."""

from __future__ import annotations

from funcpipe.core import ErrInfo, Ok, Result, report_usage
from funcpipe.ports import Generation


def report_generation(result: Result[Generation, ErrInfo]) -> Result[Generation, ErrInfo]:
    """Report a generation's token usage, when the provider gave it; returns ``result`` unchanged."""
    if isinstance(result, Ok) and result.value.usage:
        usage = result.value.usage
        report_usage(input_tokens=usage.get("input_tokens", 0), output_tokens=usage.get("output_tokens", 0))
    return result
