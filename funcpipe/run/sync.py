"""Source sync: after a run that listed a source completely, delete what its vanished items left behind.

Each source stage feeding a mirror store records what it listed (16-byte
digests of source ids, packed: 16 bytes an item) and whether its listing
completed cleanly. At the end of a run that drained, `SourceSync.run`
forgets the ledger records of the vanished items first, then deletes their
rows from the stores. The order makes a crash at any point harmless:
forgotten ledger records only mean a source that comes back is redone, and
rows still there are deleted by the next run that lists without them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from funcpipe.compile import CompiledPipeline
from funcpipe.core import Err
from funcpipe.errors import RunError
from funcpipe.policy.apply import PolicyRuntime
from funcpipe.policy.clock import Clock
from funcpipe.policy.events import EventSink
from funcpipe.run.ledger import Ledger

SYNC_BATCH = 1000
"""Source ids per delete statement of the end-of-run sync."""


def digest(source_id: str) -> bytes:
    """The 16-byte digest a listing records for ``source_id``."""
    return hashlib.blake2b(source_id.encode("utf-8"), digest_size=16).digest()


def _member(listed: set[bytes]) -> Callable[[str], bool]:
    return lambda source_id: digest(source_id) in listed


def _unpack(packed: bytearray) -> set[bytes]:
    return {bytes(packed[i : i + 16]) for i in range(0, len(packed), 16)}


class SourceSync:
    """What the sources feeding mirror stores listed in one run, and the deletions it leads to.

    Attributes:
        deleted: ``{"sources", "chunks", "ledger"}`` counts deleted so far.
        report: one entry per (store stage, source): its mode, status and deletions.
    """

    def __init__(self, pipeline: CompiledPipeline) -> None:
        self.pipeline = pipeline
        self._listed: dict[str, bytearray] = {
            src: bytearray() for sync in pipeline.syncs if sync.mode == "mirror" for src in sync.sources
        }
        self._complete: dict[str, bool] = {}
        self.deleted = {"sources": 0, "chunks": 0, "ledger": 0}
        self.report: list[dict[str, Any]] = []

    def listed(self, stage_id: str, source_id: str) -> None:
        """Source stage ``stage_id`` listed ``source_id``."""
        packed = self._listed.get(stage_id)
        if packed is not None:
            packed += digest(source_id)

    def incomplete(self, stage_id: str) -> None:
        """Source stage ``stage_id`` could not read something: its listing is not complete."""
        self._complete[stage_id] = False

    def finished(self, stage_id: str) -> None:
        """Source stage ``stage_id`` listed to the end (complete unless told otherwise)."""
        self._complete.setdefault(stage_id, True)

    async def run(self, ledger: Ledger, adapters: Mapping[str, Any], *, clock: Clock, events: EventSink) -> None:
        """Delete what vanished sources left behind: ledger records first, then store rows.

        Call it only after every item settled, in a run that was not stopped.

        Raises:
            RunError: a store could not list or delete its rows.
        """
        complete = {sid for sid, ok in self._complete.items() if ok and sid in self._listed}
        listings = {sid: _unpack(self._listed[sid]) for sid in complete}
        for sid in sorted(complete):
            self.deleted["ledger"] += ledger.forget(self.pipeline.resume_keys[sid], _member(listings[sid]))
        for sync in self.pipeline.syncs:
            for source in sync.sources:
                entry: dict[str, Any] = {
                    "stage": sync.stage,
                    "source": source,
                    "mode": sync.mode,
                    "deleted_sources": 0,
                    "deleted_chunks": 0,
                }
                if sync.mode != "mirror":
                    entry["status"] = "append: nothing deleted"
                elif source not in complete:
                    entry["status"] = "skipped: the listing was incomplete (a read error or a stop); nothing deleted"
                else:
                    runtime = PolicyRuntime(
                        self.pipeline.stage(sync.stage).policy, clock=clock, events=events, stage=sync.stage
                    )
                    store = adapters[sync.adapter]
                    sources, chunks = await _prune_vanished(
                        runtime, store, sync.stage, sync.adapter, self.pipeline.origins[source], listings[source]
                    )
                    entry.update(status="done", deleted_sources=sources, deleted_chunks=chunks)
                    self.deleted["sources"] += sources
                    self.deleted["chunks"] += chunks
                self.report.append(entry)


async def _prune_vanished(
    runtime: PolicyRuntime, store: Any, stage_id: str, adapter: str, origin: str, listed: set[bytes]
) -> tuple[int, int]:
    """Delete the rows of ``origin`` whose source id was not listed; ``(sources, chunks)``."""
    stored = await runtime.apply(store.source_ids(origin))()
    if isinstance(stored, Err):
        raise RunError(
            f"stage {stage_id}: source sync cannot list {adapter!r}: {stored.error.code}: {stored.error.msg}"
        )
    gone = [sid for sid in stored.value if digest(sid) not in listed]
    chunks = 0
    for i in range(0, len(gone), SYNC_BATCH):
        res = await runtime.apply(store.prune(origin, gone[i : i + SYNC_BATCH]))()
        if isinstance(res, Err):
            raise RunError(
                f"stage {stage_id}: source sync cannot delete from {adapter!r}: {res.error.code}: {res.error.msg}"
            )
        chunks += res.value
    return len(gone), chunks


__all__ = ["SYNC_BATCH", "SourceSync", "digest"]
