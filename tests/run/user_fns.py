"""User callables for runner tests."""

from __future__ import annotations

from funcpipe.core import Item


def upper(item: Item) -> str:
    return str(item.data).upper()


def keep_all(item: Item) -> bool:
    return True


async def slow(item: Item, seconds: float = 0.02) -> object:
    """Take a while, so that a test can interrupt the run mid-way."""
    import asyncio

    await asyncio.sleep(seconds)
    return item.data


def log_call(item: Item, path: str) -> object:
    """Append the item's id to ``path`` (fsynced): counts how often an item was processed."""
    import os

    with open(path, "a", encoding="utf-8") as fh:
        fh.write(item.id + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return item.data


def even_number(item: Item) -> bool:
    """Keep texts ``t<n>`` whose number is even (a filter dropping half of ``t0``...``t9``)."""
    return int(str(item.data)[1:]) % 2 == 0
