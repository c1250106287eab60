"""User callables for runner tests."""

from __future__ import annotations

from funcpipe.core import Item


def upper(item: Item) -> str:
    return str(item.data).upper()


def keep_all(item: Item) -> bool:
    return True
