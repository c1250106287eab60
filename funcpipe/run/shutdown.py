"""Graceful shutdown: the first SIGINT/SIGTERM stops the sources and lets in-flight work drain.

A second signal, or the end of the shutdown timeout, aborts: the run's task
is cancelled, and what was in flight is reported unfinished.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Shutdown:
    """The stop state of one run, and its signal handlers.

    Args:
        timeout: seconds in-flight work gets after the first signal.
        notify: where status lines go (already redacted by the caller's function).
        in_flight: how many items are still unsettled, for the status lines.

    Attributes:
        stop: set on the first signal: sources read no more, partial batches flush.
        signal: the first signal received, if any.
        aborted: why the run was cut short (a second signal, the timeout), if it was.
    """

    def __init__(self, timeout: float, notify: Callable[[str], None], in_flight: Callable[[], int]) -> None:
        self.timeout = timeout
        self.notify = notify
        self.in_flight = in_flight
        self.stop = asyncio.Event()
        self.signal: signal.Signals | None = None
        self.aborted: str | None = None
        self._installed: tuple[signal.Signals, ...] = ()

    def install(self, task: asyncio.Task[Any]) -> None:
        """Handle SIGINT and SIGTERM for ``task`` until `remove`."""
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.on_signal, sig, task)
        self._installed = SIGNALS

    def remove(self) -> None:
        """Restore the default handling of the signals `install` took."""
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed = ()

    def on_signal(self, sig: signal.Signals, task: asyncio.Task[Any]) -> None:
        """Stop reading sources on the first signal; abort ``task`` on the second."""
        loop = asyncio.get_running_loop()
        if self.signal is not None:
            self.notify(f"funcpipe: second {sig.name}: aborting now")
            self.abort(task, f"a second {sig.name}")
            return
        self.signal = sig
        self.stop.set()
        timeout = self.timeout
        deadline = loop.time() + timeout

        def tell() -> None:
            if self.aborted is not None or task.done():
                return
            left = max(0.0, deadline - loop.time())
            self.notify(
                f"funcpipe: {sig.name}: stopped reading sources; draining {self.in_flight()} in-flight "
                f"item(s), {left:.0f}s left (send it again to abort)"
            )
            loop.call_later(min(2.0, max(0.1, left)), tell)

        tell()
        loop.call_later(timeout, self.abort, task, f"shutdown_timeout ({timeout:g}s)")

    def abort(self, task: asyncio.Task[Any], reason: str) -> None:
        """Cancel ``task`` now, once, recording why."""
        if self.aborted is None and not task.done():
            self.aborted = reason
            task.cancel()

    def outcome(self, unfinished: int) -> tuple[str, str, int] | None:
        """``(status, message, exit code)`` of a run a signal stopped, or None if none did."""
        if self.signal is None:
            return None
        if self.aborted is not None:
            status, message = "aborted", f"aborted by {self.aborted}: {unfinished} item(s) unfinished"
        else:
            status, message = "interrupted", f"stopped by {self.signal.name} after draining in-flight work"
        return status, message + "; run again to resume", 128 + int(self.signal)


__all__ = ["SIGNALS", "Shutdown"]
