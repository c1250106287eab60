"""User callables named by the valid test specs (imported from beside the spec)."""

from __future__ import annotations

from funcpipe.core import Item


def tag(item: Item, label: str = "") -> object:
    """The item's data, labelled."""
    return {"text": item.data, "label": label}


def non_empty(item: Item) -> bool:
    """True for items with data."""
    return bool(item.data)


def shout(item: Item) -> object:
    """The item's text in capitals."""
    return str(item.data).upper()
