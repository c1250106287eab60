"""The run report: per-stage counts, accounting and timings, as JSON and as a table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any


@dataclass
class StageReport:
    """Counts and timings of one stage."""

    id: str
    use: str
    inputs: int
    outputs: int
    failed: int
    filtered: int
    retries: int
    calls: int
    p50_ms: float | None
    p95_ms: float | None
    items_per_s: float | None
    fan_out: float | None


@dataclass
class RunReport:
    """What happened in one run."""

    pipeline: str
    fingerprint: str
    run_id: str
    status: str
    exit_code: int
    started_at: str
    duration_s: float
    stages: list[StageReport]
    accounting: dict[str, Any]
    dead_letter: str | None
    dead_lettered: int
    message: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    sync: list[dict[str, Any]] = field(default_factory=list)
    """Source sync, one entry per store stage and source: mode, status, deleted sources and chunks."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    def write(self, path: Path) -> None:
        """Write the report as JSON (atomically: temp file, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_summary(report: RunReport, file: IO[str]) -> None:
    """Print the per-stage summary table and the accounting line (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, highlight=False, soft_wrap=False, width=max(100, 0))
    table = Table(title=f"funcpipe run {report.pipeline}: {report.status}", title_justify="left")
    for col in (
        "stage",
        "use",
        "in",
        "out",
        "failed",
        "filtered",
        "retries",
        "p50 ms",
        "p95 ms",
        "items/s",
    ):
        table.add_column(col, justify="left" if col in ("stage", "use") else "right")
    for s in report.stages:
        table.add_row(
            s.id,
            s.use,
            str(s.inputs),
            str(s.outputs),
            str(s.failed),
            str(s.filtered),
            str(s.retries),
            _fmt(s.p50_ms, ".1f"),
            _fmt(s.p95_ms, ".1f"),
            _fmt(s.items_per_s, ".0f"),
        )
    console.print(table)
    a = report.accounting
    skipped = a.get("skipped") or 0
    deleted = a.get("deleted") or 0
    chunks = a.get("deleted_chunks") or 0
    line = (
        f"{a['sources'] + skipped} source item(s): {a['done']} done, {a['failed']} failed, {a['filtered']} filtered"
        f"{f', {skipped} skipped (unchanged since an earlier run)' if skipped else ''}"
        f"{f', {deleted} deleted (gone from the source; {chunks} chunk(s) removed)' if deleted else ''}"
        f" in {report.duration_s:.2f}s"
    )
    console.print(line)
    if report.dead_lettered:
        console.print(f"{report.dead_lettered} failed item(s) written to {report.dead_letter}")
    if report.message:
        console.print(report.message)
