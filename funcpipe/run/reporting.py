"""Building a run's `RunReport` from its counters, and writing it where it belongs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from funcpipe.compile import CompiledPipeline
from funcpipe.run.accounting import Accounting, Failures, StageStats
from funcpipe.run.costs import RunCosts
from funcpipe.run.report import ErrorCount, RunReport, StageReport


def stage_reports(
    pipeline: CompiledPipeline, stats: Mapping[str, StageStats], failures: Failures, duration: float
) -> list[StageReport]:
    """One `StageReport` per stage, in graph order, from its counters and failure groups."""
    stages = []
    for st in pipeline.stages:
        s = stats[st.id]
        p50, p95 = s.percentile(0.5), s.percentile(0.95)
        stages.append(
            StageReport(
                id=st.id,
                use=st.kind.name,
                inputs=s.inputs,
                outputs=s.outputs,
                failed=s.failed,
                filtered=s.filtered,
                retries=s.retries,
                calls=s.calls,
                p50_ms=None if p50 is None else round(p50 * 1000, 3),
                p95_ms=None if p95 is None else round(p95 * 1000, 3),
                items_per_s=round(s.outputs / duration, 1) if duration > 0 else None,
                fan_out=round(s.outputs / s.inputs, 3) if s.inputs else None,
                errors=[ErrorCount(g.code, g.count, g.first_message) for g in failures.of(st.id)],
            )
        )
    return stages


def build_report(
    pipeline: CompiledPipeline,
    *,
    run_id: str,
    started: datetime,
    duration: float,
    status: str,
    exit_code: int,
    message: str | None,
    stats: Mapping[str, StageStats],
    failures: Failures,
    acct: Accounting,
    deleted: Mapping[str, int],
    dead_letter: Path | None,
    dead_lettered: int,
    sync: list[dict[str, Any]],
    costs: RunCosts | None = None,
    executor: Mapping[str, Any] | None = None,
) -> RunReport:
    """The report of a finished run (``message`` already redacted)."""
    accounting = {**acct.to_json(), "deleted": deleted["sources"], "deleted_chunks": deleted["chunks"]}
    return RunReport(
        pipeline=pipeline.name,
        fingerprint=pipeline.fingerprint,
        run_id=run_id,
        status=status,
        exit_code=exit_code,
        started_at=started.isoformat(),
        duration_s=round(duration, 3),
        stages=stage_reports(pipeline, stats, failures, duration),
        accounting=accounting,
        dead_letter=str(dead_letter) if dead_lettered and dead_letter is not None else None,
        dead_lettered=dead_lettered,
        message=message,
        sync=sync,
        usage=costs.usage_json() if costs is not None else {},
        cost=costs.total_cost() if costs is not None else None,
        budgets=costs.budgets_json() if costs is not None else [],
        executor=dict(executor) if executor else {"kind": "local"},
    )


def write_report(report: RunReport, targets: list[Path], redact: Callable[[str], str]) -> None:
    """Write ``report`` to every target; a failure is told in the report, never raised.

    The run's outcome stands; only the missing report is added, and a run
    that went well still exits non-zero, since its record is lost.
    """
    failed: list[str] = []
    written: list[Path] = []
    for target in targets:
        try:
            report.write(target)
            written.append(target)
        except OSError as exc:
            failed.append(f"the report could not be written to {target}: {exc.strerror or exc}")
    if not failed:
        return
    report.message = redact("; ".join([*([report.message] if report.message else []), *failed]))
    report.exit_code = report.exit_code or 1
    for target in written:
        with contextlib.suppress(OSError):
            report.write(target)


__all__ = ["build_report", "stage_reports", "write_report"]
