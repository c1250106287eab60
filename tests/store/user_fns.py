"""User callables for the store tests: pace a run so that faults land mid-ingest."""

from __future__ import annotations

import asyncio
import os

from funcpipe.core import Item


async def _exists(path: str) -> bool:
    return await asyncio.to_thread(os.path.exists, path)


async def pace(item: Item, flag: str, seconds: float, hold_from: int) -> object:
    """Slow the run down until the file ``flag`` exists.

    Items from lines before ``hold_from`` each take ``seconds`` while the flag
    is absent; the rest wait for it, so the run cannot end before the test
    has done its damage, whatever the machine's speed.
    """
    if await _exists(flag):
        return item.data
    if int(str(item.meta.get("line", 0))) < hold_from:
        await asyncio.sleep(seconds)
        return item.data
    while True:
        await asyncio.sleep(0.05)
        if await _exists(flag):
            return item.data
