"""Scale-out: the same compiled pipeline run in many Ray workers, one shard of the sources each.

``executor: {kind: ray}`` in the spec, ``funcpipe run --executor ray`` or
``pipeline.run(executor="ray")``. The driver lists the sources once, shards
them by source id, and runs each shard in a worker with its own adapters;
rate limits and circuit breakers are shared through Ray actors; the ledger,
the dead letters, the source sync and the report stay with the driver.
See docs/scale-out.md.
"""

from __future__ import annotations

from funcpipe.run.scaleout._executor import MAX_RETRIES, drive_shards, split
from funcpipe.run.scaleout._ray import import_ray
from funcpipe.run.scaleout._schedule import GUARD, TOLERANCE, Book

__all__ = ["GUARD", "MAX_RETRIES", "TOLERANCE", "Book", "drive_shards", "import_ray", "split"]
