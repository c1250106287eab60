"""The run report: per-stage counts, failures, accounting and timings, as JSON and as text.

At the end of a run the terminal shows the summary table, the accounting line
and, when items failed, a failure summary in the manner of pytest's short test
summary: the dead-letter file, then one line per stage and error code with the
count and the first message (`print_failures`)::

    failed: 165 item(s) -> .funcpipe/rag.dead.jsonl
      embed  AUTH x160    401 Unauthorized: invalid api key (first of 160)
      embed  TIMEOUT x5   attempt timed out after 10s (first of 5)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

MESSAGE_WIDTH = 100
"""Characters of a first message shown on the terminal (the report keeps more)."""


@dataclass
class ErrorCount:
    """The items of one stage that failed with one error code.

    Attributes:
        code: the error code.
        count: how many items failed with it.
        first_message: the first one's message, redacted and shortened.
    """

    code: str
    count: int
    first_message: str


@dataclass
class StageReport:
    """Counts and timings of one stage, and its failures by error code (the largest first)."""

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
    errors: list[ErrorCount] = field(default_factory=list)


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
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per adapter: ``requests``, ``input_tokens``, ``output_tokens``, ``counted`` (provider | estimated |
    mixed | none), its ``price`` and ``cost`` (None when unpriced), its ``kind``, ``model`` and ``chars_per_token``."""
    cost: float | None = None
    """The run's cost in USD: the sum over the priced adapters (None when none is priced)."""
    budgets: list[dict[str, Any]] = field(default_factory=list)
    """Each budget: its ``scope`` (run, stage <id>), ``limit``, what was ``spent`` and why it was ``exhausted``."""
    sync: list[dict[str, Any]] = field(default_factory=list)
    """Source sync, one entry per store stage and source: mode, status, deleted sources and chunks."""
    executor: dict[str, Any] = field(default_factory=lambda: {"kind": "local"})
    """Where the work ran; for Ray, the workers and each shard's source items and attempts."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    def write(self, path: Path) -> None:
        """Write the report as JSON (atomically: temp file, then rename).

        Raises:
            OSError: if it cannot be written; no temporary file is left behind.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
            tmp.replace(path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise


def unwritable(path: Path, *, directory: bool = False) -> str | None:
    """Why `RunReport.write` (or, with ``directory``, a file inside ``path``) would fail, or None.

    It is tried, not judged by permission bits: missing directories are
    created (as writing does) and a temporary file is created there and removed.
    """
    folder = path if directory else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not directory and path.is_dir():
            return "it is a directory"
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return os_reason(exc, folder)
    return None


def os_reason(exc: OSError, path: Path) -> str:
    """Why writing under ``path`` failed, in words: ``Permission denied``, or which parent is a file."""
    if isinstance(exc, FileExistsError | NotADirectoryError):
        for parent in (path, *path.parents):
            if parent.exists() and not parent.is_dir():
                return f"{parent} is a file, not a directory"
    return str(exc.strerror or exc)


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
    if report.usage:
        console.print(usage_table(report))
    for line in budget_lines(report):
        file.write(line + "\n")
    file.write(accounting_line(report) + "\n")
    print_failures(report, file)
    if report.message:
        file.write(report.message + "\n")
    file.flush()


def usage_table(report: RunReport) -> Any:
    """The usage table: per adapter its requests, tokens, how they were counted and its cost; then the total."""
    from rich.table import Table

    table = Table(title="usage", title_justify="left")
    for col in ("adapter", "model", "requests", "input tokens", "output tokens", "counted", "cost"):
        table.add_column(col, justify="left" if col in ("adapter", "model", "counted") else "right")
    for name, u in report.usage.items():
        table.add_row(
            name,
            str(u.get("model") or u.get("kind") or "-"),
            str(u.get("requests", 0)),
            str(u.get("input_tokens", 0)),
            str(u.get("output_tokens", 0)),
            str(u.get("counted", "-")),
            _money(u.get("cost")),
        )
    if len(report.usage) > 1 or report.cost is not None:
        table.add_row(
            "total",
            "",
            *[
                str(sum(u.get(k, 0) for u in report.usage.values()))
                for k in ("requests", "input_tokens", "output_tokens")
            ],
            "",
            _money(report.cost),
        )
    return table


def _money(value: object) -> str:
    return money(value) if isinstance(value, int | float) else "-"


def money(value: float) -> str:
    """An amount in USD as a person reads it: ``$1.50``, ``$0.0241``, ``$0.000024``, ``$0``."""
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    if abs(value) >= 0.01:
        return f"${value:.4f}"
    return "$" + f"{value:.10f}".rstrip("0")


def budget_lines(report: RunReport) -> list[str]:
    """One line per budget: its limits and what was spent against them (``exhausted`` when it ran out)."""
    lines = []
    for b in report.budgets:
        limit = b.get("limit") or {}
        spent = b.get("spent") or {}
        parts = [
            f"{spent.get(k, 0)} of {limit[k]} {label}"
            for k, label in (("requests", "request(s)"), ("tokens", "token(s)"))
            if k in limit
        ]
        if "cost" in limit:
            parts.append(f"{_money(spent.get('cost', 0))} of {_money(limit['cost'])}")
        state = "exhausted" if b.get("exhausted") else "within"
        lines.append(f"budget ({b.get('scope')}): {', '.join(parts)} spent ({state})")
    return lines


def accounting_line(report: RunReport) -> str:
    """``12 source item(s): 9 done, 1 failed, 2 filtered in 0.42s``, with skipped and unfinished items if any."""
    a = report.accounting
    skipped = a.get("skipped") or 0
    unfinished = a.get("unfinished") or 0
    deleted = a.get("deleted") or 0
    chunks = a.get("deleted_chunks") or 0
    return (
        f"{a['sources'] + skipped} source item(s): {a['done']} done, {a['failed']} failed, {a['filtered']} filtered"
        f"{f', {unfinished} unfinished (the run stopped before they were done)' if unfinished else ''}"
        f"{f', {skipped} skipped (unchanged since an earlier run)' if skipped else ''}"
        f"{f', {deleted} deleted (gone from the source; {chunks} chunk(s) removed)' if deleted else ''}"
        f" in {report.duration_s:.2f}s"
    )


def failure_lines(report: RunReport, *, unicode: bool = True) -> list[str]:
    """The failure summary: the dead-letter file, then per stage and code the count and first message.

    Empty when no item failed. Messages are the report's, already redacted by
    the runner; they are cut to `MESSAGE_WIDTH` characters.

    Args:
        report: the run's report.
        unicode: use ``→`` and ``×`` (else ``->`` and ``x``, for terminals that cannot print them).
    """
    if not report.dead_lettered:
        return []
    arrow, times = ("\u2192", "\u00d7") if unicode else ("->", "x")
    rows = [(s.id, f"{e.code} {times}{e.count}", e) for s in report.stages for e in s.errors]
    lines = [f"failed: {report.dead_lettered} item(s) {arrow} {_display_path(report.dead_letter)}"]
    if rows:
        w_stage = max(len(r[0]) for r in rows)
        w_code = max(len(r[1]) for r in rows)
        for stage, code, e in rows:
            msg = _cut(e.first_message, MESSAGE_WIDTH)
            more = f" (first of {e.count})" if e.count > 1 else ""
            lines.append(f"  {stage:<{w_stage}}  {code:<{w_code}}  {msg}{more}")
    return lines


def print_failures(report: RunReport, file: IO[str]) -> None:
    """Write `failure_lines` to ``file`` (nothing if no item failed)."""
    lines = failure_lines(report, unicode=_can_encode(file, "\u2192\u00d7"))
    if lines:
        file.write("\n".join(lines) + "\n")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _can_encode(file: IO[str], text: str) -> bool:
    try:
        text.encode(getattr(file, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _display_path(path: str | None) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to read and to copy)."""
    if path is None:
        return "-"
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive, on Windows
        return path
    return path if rel.startswith("..") else rel
