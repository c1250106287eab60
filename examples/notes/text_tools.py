"""User stages for examples/notes/notes.yaml: plain Python callables named by import path.

A ``map`` callable receives the `Item` and returns its new data (or None to
drop it); a ``filter`` callable returns a bool. Both may be ``async def``.
"""

from __future__ import annotations

from funcpipe.core import Item


def annotate(item: Item) -> dict[str, object]:
    """Count the words and lines of a note."""
    text = str(item.data)
    return {"text": text.strip(), "words": len(text.split()), "lines": text.count("\n") + 1}


async def has_words(item: Item) -> bool:
    """Keep notes with at least one word."""
    data = item.data
    return isinstance(data, dict) and int(data.get("words", 0)) > 0


def explode(item: Item) -> dict[str, object]:
    """Fail on purpose for notes that say so (to show dead letters)."""
    if "EXPLODE" in str(item.data):
        raise ValueError(f"note {item.meta.get('path')} asked to explode")
    return {"text": str(item.data)}
