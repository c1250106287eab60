"""Progress while a run goes: bars on a terminal, a heartbeat line elsewhere.

Both are fed only from structured data: the run's live per-stage counters
(`funcpipe.RunSession.stats`) and the policy events (limiter and breaker
waits), never by parsing messages. The totals come from the dry-run
estimate (`funcpipe.Pipeline.estimate`) when the caller has one:

- `LiveProgress`: per stage a ``rich.progress`` bar, ``done/total``, the
  percentage, the rate, the stage's elapsed time and its ETA, and its
  failures, retries and items held by a rate limit or an open breaker;
  redrawn four times a second. The last frame shows the final counts and
  nothing waiting.
- `ProgressLines`: without a terminal (CI logs, a pipe), one plain line
  every ``interval`` seconds (or a JSON ``progress`` line, with a
  `funcpipe.run.logging.JsonEventLog`), so a long run is never silent.

A stage's progress counts the items it is done with (passed on, failed or
filtered) against the items the estimate expects it to pass on. An
estimate can be off (chunk counts come from file sizes; a filter or a
resumed run passes fewer): a total that is passed grows with the count,
and the last frame shows each stage complete.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from funcpipe.policy.events import Event
from funcpipe.run.accounting import StageStats

__all__ = ["LiveProgress", "ProgressLines", "StageProgress", "format_seconds"]

MIN_RATE_SECONDS = 0.2
"""A stage's rate (and so its ETA) is shown once it has been at work this long: before, it is noise."""


def format_seconds(seconds: float | None) -> str:
    """``H:MM:SS``, or ``-:--:--`` when unknown."""
    if seconds is None:
        return "-:--:--"
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass(frozen=True)
class StageProgress:
    """One stage's progress at one moment.

    Attributes:
        id: the stage id.
        use: its kind.
        done: items it is done with: passed on, failed or filtered.
        total: the items it is expected to pass on, when known (never below ``done``).
        failed: items that failed there.
        retries: attempts retried.
        elapsed: seconds from its first item to its latest, if it has had one.
        rate: items done per second of ``elapsed``, once that is long enough to tell.
    """

    id: str
    use: str
    done: int
    total: int | None
    failed: int
    retries: int
    elapsed: float | None
    rate: float | None

    @property
    def percent(self) -> float | None:
        """``done`` as a percentage of ``total``."""
        if self.total is None:
            return None
        return 100.0 if self.total == 0 else 100.0 * self.done / self.total

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, when the total is known and items are moving."""
        if self.total is None:
            return None
        left = self.total - self.done
        if left <= 0:
            return 0.0
        return left / self.rate if self.rate else None


class _Tracker:
    """Turns the live counters into `StageProgress` values."""

    def __init__(
        self, stages: Sequence[tuple[str, str]], stats: Mapping[str, StageStats], totals: Mapping[str, int] | None
    ) -> None:
        self.stages = list(stages)
        self.stats = stats
        self.totals = dict(totals or {})

    def snapshot(self, *, final: bool = False) -> list[StageProgress]:
        out = []
        for sid, use in self.stages:
            st = self.stats[sid]
            done = st.outputs + st.failed + st.filtered
            # A stage's time runs from its first item to its latest, on the run's clock:
            # however often it is looked at, and a finished stage's rate stays put.
            first, last = st.first_at, st.last_at
            elapsed = None if first is None or last is None else max(0.0, last - first)
            rate = done / elapsed if elapsed is not None and elapsed >= MIN_RATE_SECONDS else None
            estimate = self.totals.get(sid)
            total = done if final else (None if estimate is None else max(estimate, done))
            out.append(StageProgress(sid, use, done, total, st.failed, st.retries, elapsed, rate))
        return out


class LiveProgress:
    """Per-stage ``rich.progress`` bars on a terminal, with totals, percentage, rate, elapsed time and ETA.

    A `funcpipe.Display`: attach it to a `funcpipe.RunSession` and start it
    around the run::

        totals = {s.id: s.outputs for s in pipeline.estimate().stages}
        progress = LiveProgress([(s.id, s.use) for s in session.stages], session.stats, sys.stderr, totals)
        session.attach(progress)
        progress.start()
        try:
            report = session.run()
        finally:
            progress.stop()

    Args:
        stages: ``(stage id, kind)`` in graph order.
        stats: the run's live per-stage counters, `funcpipe.RunSession.stats` (read on each redraw).
        file: the terminal to draw on.
        totals: per stage id, the items it is expected to pass on (the dry-run estimate's ``outputs``).
    """

    def __init__(
        self,
        stages: Sequence[tuple[str, str]],
        stats: Mapping[str, StageStats],
        file: IO[str],
        totals: Mapping[str, int] | None = None,
    ) -> None:
        from rich.console import Console

        self.stages = list(stages)
        self.stats = stats
        self._tracker = _Tracker(stages, stats, totals)
        self._waiting: dict[str, list[float]] = {sid: [] for sid, _ in stages}
        self._open: dict[str, bool] = {}
        self._final = False
        self.status = ""
        self.console = Console(file=file, force_terminal=True, highlight=False)
        self._tasks: dict[str, Any] = {}  # empty until the bars exist: rich draws once while they are made
        self._progress = _progress_bars(self)
        self._tasks = {
            sid: self._progress.add_task(sid, total=None, use=use, rate="", elapsed="", eta="", counts="")
            for sid, use in stages
        }

    def __call__(self, ev: Event) -> None:
        """Take a policy event (limiter and breaker waits are shown as waiting items)."""
        if ev.kind == "limited" and ev.stage in self._waiting:
            heapq.heappush(self._waiting[ev.stage], time.monotonic() + ev.duration)
        elif ev.kind == "breaker" and ev.stage:
            self._open[ev.stage] = ev.code == "open"

    def notice(self, message: str) -> None:
        """Show a status line (shutdown progress) under the bars, in place of the last one."""
        self.status = message

    def waiting(self, stage_id: str) -> int:
        """Items currently held by a limiter wait in ``stage_id`` (none once the run has ended)."""
        heap = self._waiting[stage_id]
        now = time.monotonic()
        while heap and (heap[0] <= now or self._final):
            heapq.heappop(heap)
        return len(heap)

    def _sync(self) -> None:
        """Bring the bars up to the counters; called before each redraw."""
        if not self._tasks:
            return
        for p in self._tracker.snapshot(final=self._final):
            counts = f"failed {p.failed}  retries {p.retries}"
            waiting = self.waiting(p.id)
            if waiting:
                counts += f"  waiting {waiting}"
            if self._open.get(p.id) and not self._final:
                counts += "  (breaker open)"
            self._progress.update(
                self._tasks[p.id],
                completed=p.done,
                total=p.total,
                rate="" if p.rate is None else f"{p.rate:.1f}/s",
                elapsed=f"elapsed {format_seconds(p.elapsed or 0.0)}",
                eta=f"eta {format_seconds(p.eta)}",
                counts=counts,
            )

    def start(self) -> None:
        """Start redrawing."""
        self._progress.start()

    def stop(self, *, finished: bool = True) -> None:
        """Draw a last time and stop.

        Args:
            finished: the run went to its end: each bar shows its stage
                complete, with its final count as the total. Else (a signal
                stopped it) the totals stay as estimated.
        """
        self._final = finished
        for heap in self._waiting.values():
            heap.clear()
        self._open.clear()
        self._progress.refresh()
        self._progress.stop()


def _progress_bars(owner: LiveProgress) -> Any:
    """The ``rich.progress.Progress`` of ``owner``: its rows synced from the counters before each draw."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
    from rich.text import Text

    class _Bars(Progress):
        def get_renderables(self) -> Iterable[Any]:
            owner._sync()
            yield self.make_tasks_table(self.tasks)
            if owner.status:
                yield Text(owner.status)

    return _Bars(
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[use]}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TaskProgressColumn(text_format="{task.percentage:>3.0f}%", text_format_no_percentage="   "),
        TextColumn("{task.fields[rate]}", justify="right"),
        TextColumn("{task.fields[elapsed]}"),
        TextColumn("{task.fields[eta]}"),
        TextColumn("{task.fields[counts]}"),
        console=owner.console,
        refresh_per_second=4,
        transient=False,
        auto_refresh=True,
    )


class _ProgressLog(Protocol):
    """Where JSON heartbeats go (a `funcpipe.run.logging.JsonEventLog`)."""

    def progress(self, message: str, stages: Mapping[str, Mapping[str, object]], /) -> None: ...


class ProgressLines:
    """A heartbeat without a terminal: one plain line every ``interval`` seconds while the run goes.

    ``progress 0:00:10  load 60/60 100%  work 31/60 52% 3.1/s eta 0:00:09  out 30/60 50% 3.0/s eta 0:00:10``

    It reads the live counters on its own thread. A `funcpipe.Display`:
    attached to the session, it falls silent at the ``run_end`` event (so no
    heartbeat follows the run's end) and writes the status lines as plain
    lines (with a JSON ``log``, that log writes them). Start it before the
    run and stop it after; the summary follows.

    Args:
        stages: ``(stage id, kind)`` in graph order.
        stats: the run's live per-stage counters (`funcpipe.RunSession.stats`).
        file: where the lines go (stderr).
        totals: per stage id, the items it is expected to pass on.
        interval: seconds between lines.
        log: write JSON ``progress`` lines through this log instead of plain text.
    """

    def __init__(
        self,
        stages: Sequence[tuple[str, str]],
        stats: Mapping[str, StageStats],
        file: IO[str],
        totals: Mapping[str, int] | None = None,
        *,
        interval: float = 10.0,
        log: _ProgressLog | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"the progress interval must be positive, got {interval}")
        self._tracker = _Tracker(stages, stats, totals)
        self.file = file
        self.interval = interval
        self.log = log
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # a heartbeat is written whole, and none after `run_end`
        self._thread = threading.Thread(target=self._beat, name="funcpipe-progress", daemon=True)

    def __call__(self, ev: Event) -> None:
        """Fall silent when the run ends (attached before a log, before the log writes the end)."""
        if ev.kind == "run_end":
            with self._lock:
                self._stop.set()

    def notice(self, message: str) -> None:
        """A status line, as a plain line (a JSON ``log`` attached beside writes its own)."""
        if self.log is None:
            self.file.write(message + "\n")
            self.file.flush()

    def line(self) -> str:
        """The heartbeat line for this moment."""
        parts = [f"progress {format_seconds(time.monotonic() - self._t0)}"]
        for p in self._tracker.snapshot():
            part = f"{p.id} {p.done}" + ("" if p.total is None else f"/{p.total} {p.percent:.0f}%")
            if p.rate is not None and (p.total is None or p.done < p.total):
                part += f" {p.rate:.1f}/s"
                if p.total is not None:
                    part += f" eta {format_seconds(p.eta)}"
            if p.failed:
                part += f" failed {p.failed}"
            parts.append(part)
        return "  ".join(parts)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._stop.is_set():
                    return
                self._write()

    def _write(self) -> None:
        line = self.line()
        if self.log is not None:
            stages = {
                p.id: {"done": p.done, "total": p.total, "failed": p.failed, "rate": p.rate, "eta_s": p.eta}
                for p in self._tracker.snapshot()
            }
            self.log.progress(line, stages)
        else:
            self.file.write(line + "\n")
            self.file.flush()

    def start(self) -> None:
        """Start the heartbeat."""
        self._thread.start()

    def stop(self) -> None:
        """Stop it (no line is written after this returns)."""
        with self._lock:
            self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
