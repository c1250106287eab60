"""Paths into a spec document: ``stages[2].policy.retry`` and back."""

from __future__ import annotations

import re

Path = tuple[str | int, ...]
"""Keys and list indices from the document root."""

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SEGMENT = re.compile(r"\[(-?\d+)\]|\.?([^.\[\]]+)")


def format_path(path: Path) -> str:
    """``('stages', 2, 'with', 'size')`` as ``stages[2].with.size``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _PLAIN_KEY.fullmatch(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{part!r}]")
    return "".join(out)


def parse_path(text: str) -> Path:
    """``stages[2].with.size`` or ``stages.2.with.size`` as a path.

    A bare number selects a list item (``stages.2``); ``[n]`` always does.

    Raises:
        ValueError: for an empty path or empty segment, with the accepted forms.
    """
    if not text or text.startswith(".") or text.endswith(".") or ".." in text:
        raise ValueError(f"{text!r} is not a key path such as params.corpus or stages[2].with.size")
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"{text!r} is not a key path such as params.corpus or stages[2].with.size")
        index, key = m.group(1), m.group(2)
        if index is not None:
            parts.append(int(index))
        elif key.isdigit():
            parts.append(int(key))
        else:
            parts.append(key)
        pos = m.end()
    return tuple(parts)
