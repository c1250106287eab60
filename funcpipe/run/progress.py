"""Live progress on a terminal: one line per stage, redrawn a few times a second.

Fed only from structured data: the runner's per-stage counters and the policy
events (limiter and breaker waits), never by parsing messages.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from funcpipe.policy.events import Event
from funcpipe.run.accounting import StageStats


class LiveProgress:
    """A rich ``Live`` table: per stage, items done, rate, failures, retries and items waiting.

    A `funcpipe.Display`: attach it to a `funcpipe.RunSession` and start it
    around the run::

        progress = LiveProgress([(s.id, s.use) for s in session.stages], session.stats, sys.stderr)
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
    """

    def __init__(self, stages: Sequence[tuple[str, str]], stats: Mapping[str, StageStats], file: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.stages = list(stages)
        self.stats = stats
        self._waiting: dict[str, list[float]] = {sid: [] for sid, _ in stages}
        self._open: dict[str, bool] = {}
        self.status = ""
        self._t0 = time.monotonic()
        self.console = Console(file=file, force_terminal=True, highlight=False)
        self._live = Live(console=self.console, refresh_per_second=4, transient=False, get_renderable=self._render)

    def __call__(self, ev: Event) -> None:
        """Take a policy event (limiter and breaker waits are shown as waiting items)."""
        if ev.kind == "limited" and ev.stage in self._waiting:
            heapq.heappush(self._waiting[ev.stage], time.monotonic() + ev.duration)
        elif ev.kind == "breaker" and ev.stage:
            self._open[ev.stage] = ev.code == "open"

    def notice(self, message: str) -> None:
        """Show a status line (shutdown progress) under the table, in place of the last one."""
        self.status = message

    def waiting(self, stage_id: str) -> int:
        """Items currently held by a limiter wait in ``stage_id``."""
        heap = self._waiting[stage_id]
        now = time.monotonic()
        while heap and heap[0] <= now:
            heapq.heappop(heap)
        return len(heap)

    def _render(self) -> Any:
        from rich.table import Table

        elapsed = max(1e-9, time.monotonic() - self._t0)
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for col in ("stage", "use", "done", "rate/s", "failed", "retries", "waiting"):
            table.add_column(col, justify="left" if col in ("stage", "use") else "right")
        for sid, kind in self.stages:
            st = self.stats[sid]
            waiting = f"{self.waiting(sid)}" + (" (breaker open)" if self._open.get(sid) else "")
            table.add_row(
                sid, kind, str(st.outputs), f"{st.outputs / elapsed:.0f}", str(st.failed), str(st.retries), waiting
            )
        if self.status:
            from rich.console import Group
            from rich.text import Text

            return Group(table, Text(self.status))
        return table

    def start(self) -> None:
        """Start redrawing."""
        self._live.start()

    def stop(self) -> None:
        """Draw a last time and stop."""
        self._live.refresh()
        self._live.stop()
