"""What watching a run costs: a whole run with metrics and traces on, against the same run without.

Prints, measured in one run:

1. per external call, the time ``apply_policy`` takes (every call-level
   policy set) with the run's sinks attached, against events kept in a list
   (what the runner's own counters cost): with the Prometheus metrics, with
   the OpenTelemetry tracer (an SDK provider whose exporter drops the
   spans, so the export itself is not timed), and with the JSON log
   written to memory;
2. items per CPU second of a whole run (``source.jsonl`` -> a ``map`` stage
   whose call does nothing, under a policy -> ``sink.jsonl``) with
   ``metrics_file`` and a tracer provider, against the same run without
   them, and the CPU time they add per item. A call that does nothing is
   the worst case: every item is a call, so two spans, and nothing else
   to do; against a service answering in milliseconds the same microseconds
   are lost in the wait.

Times are CPU time of the process (``time.process_time``): on a shared
machine, wall time mostly measures the neighbours. Rates and times are the
best of ``--repeat`` runs. Run it as ``python bench/telemetry.py`` (about
half a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import funcpipe
from funcpipe.core import ErrInfo, Ok, Result
from funcpipe.policy import Event, EventSink, PolicyRuntime
from funcpipe.policy.models import Backoff, CircuitBreaker, Policy, RateLimit, Retry, Timeout
from funcpipe.run.logging import JsonEventLog
from funcpipe.run.metrics import RunMetrics
from funcpipe.run.tracing import RunTracer


class _Dropped(SpanExporter):
    """Takes spans and keeps none: the tracer's own cost, without the export's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to close."""


def provider() -> TracerProvider:
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(_Dropped()))
    return p


def full_policy() -> Policy:
    return Policy(
        timeout=Timeout(attempt=10.0),
        retry=Retry(max_attempts=3, backoff=Backoff(kind="immediate")),
        rate_limit=RateLimit(requests=1_000_000, per=1.0, burst=100_000),
        circuit_breaker=CircuitBreaker(failures=1000, min_calls=1000),
        concurrency=8,
    )


async def _ok() -> Result[int, ErrInfo]:
    return Ok(1)


async def _timed_calls(rt: PolicyRuntime, calls: int) -> float:
    t0 = time.process_time()
    for _ in range(calls):
        await rt.apply(_ok, item_id="i", items=8)()
    return time.process_time() - t0


def per_call_us(sink: EventSink, calls: int, repeat: int) -> float:
    """Microseconds per call of a runtime with every call-level part set, reporting to ``sink``."""
    best = float("inf")
    for _ in range(repeat):
        rt = PolicyRuntime(full_policy(), events=sink, stage="embed", seed=0)

        best = min(best, asyncio.run(_timed_calls(rt, calls)))
    return best / calls * 1e6


def sinks() -> dict[str, Callable[[], EventSink]]:
    def listed() -> EventSink:
        kept: list[Event] = []
        return kept.append

    def metrics() -> EventSink:
        return RunMetrics("bench", {"embed": "embed"}, {"embed": ("embedder", "openai")}, {}, frozenset({"embed"}))

    def tracer() -> EventSink:
        t = RunTracer(provider(), {"embed": ("embedder", "openai")}, str)
        t(Event("run_start", data={"run_id": "r", "pipeline": "bench"}))
        return t

    def logged() -> EventSink:
        return JsonEventLog(io.StringIO(), run_id="r", pipeline="bench")

    return {
        "events kept in a list": listed,
        "+ Prometheus metrics": metrics,
        "+ OpenTelemetry tracer": tracer,
        "+ JSON log lines": logged,
    }


SPEC = """\
version: 1
name: bench
policies:
  work: {retry: {max_attempts: 3, backoff: {kind: immediate}}, concurrency: 8}
stages:
  - {id: load, use: source.jsonl, with: {path: items.jsonl, text_field: text}}
  - {id: work, use: map, with: {fn: "bench_fns:touch"}, policy: work}
  - {id: out, use: sink.jsonl, with: {path: out.jsonl}}
"""

FNS = """\
async def touch(item):
    return item.data
"""


def run_rate(root: Path, n: int, observed: bool) -> float:
    """Items/s of one fresh run of the bench pipeline."""
    pipeline = funcpipe.load(root / "bench.yaml")
    options: dict[str, object] = {}
    if observed:
        options = {"metrics_file": root / "bench.prom", "tracer_provider": provider()}
    t0 = time.process_time()
    report = pipeline.run(fresh=True, **options)  # type: ignore[arg-type]
    seconds = time.process_time() - t0
    assert report.accounting["done"] == n, report.accounting
    return n / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20_000, help="calls timed per sink")
    parser.add_argument("--n", type=int, default=5_000, help="items through the whole run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts")
    args = parser.parse_args(argv)

    print(f"apply_policy per call, every call-level policy set, best of {args.repeat}")
    base = None
    for label, make in sinks().items():
        us = per_call_us(make(), args.calls, args.repeat)
        base = us if base is None else base
        extra = "" if us == base else f" ({us - base:+.2f} us)"
        print(f"  {label}: {us:.2f} us{extra}")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bench.yaml").write_text(SPEC, encoding="utf-8")
        (root / "bench_fns.py").write_text(FNS, encoding="utf-8")
        with (root / "items.jsonl").open("w", encoding="utf-8") as fh:
            for i in range(args.n):
                fh.write(json.dumps({"text": f"item {i}"}) + "\n")
        plain = max(run_rate(root, args.n, False) for _ in range(args.repeat))
        watched = max(run_rate(root, args.n, True) for _ in range(args.repeat))
    print(f"a whole run, {args.n:,} items through a map stage under a policy, per CPU second")
    print(f"  without metrics or traces: {plain:,.0f} items/s")
    print(f"  with metrics and traces: {watched:,.0f} items/s")
    print(f"  ratio: {watched / plain:.2f}x, {1e6 / watched - 1e6 / plain:.1f} us more CPU per item")
    return 0


if __name__ == "__main__":
    sys.exit(main())
