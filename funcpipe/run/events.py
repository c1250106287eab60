"""The run's event hub: feeds stage counters and accounting from events, then forwards them."""

from __future__ import annotations

from collections.abc import Mapping

from funcpipe.core import Item
from funcpipe.policy.events import Event, EventSink
from funcpipe.run.accounting import Accounting, StageStats


class EventHub:
    """An `EventSink` that counts into ``stats`` and ``acct``, then calls every listener.

    Attributes:
        listeners: the sinks events are forwarded to (progress, JSON logs); append to add one.
    """

    def __init__(self, stats: Mapping[str, StageStats], acct: Accounting, listeners: list[EventSink]) -> None:
        self.stats = stats
        self.acct = acct
        self.listeners = listeners

    def __call__(self, ev: Event) -> None:
        st = self.stats.get(ev.stage)
        if st is not None:
            if ev.kind == "attempt":
                st.calls += 1
                if ev.attempt > 1:
                    st.retries += 1
            elif ev.kind in ("success", "failure"):
                st.latency(ev.duration)
            elif ev.kind == "wait":
                st.waits += 1
            elif ev.kind == "limited":
                st.limited += 1
            elif ev.kind == "filtered":
                st.filtered += 1
                item = ev.data.get("item")
                if isinstance(item, Item):
                    self.acct.filtered(item.source_id)
        for listener in self.listeners:
            listener(ev)


__all__ = ["EventHub"]
