"""Import paths (``package.module:name``): the one place that resolves them and edits ``sys.path``.

User callables live beside the spec file. The loader resolves them to check
them, and the runner keeps the spec's directory importable while it runs, so
that a callable importing a sibling module at call time finds it; both go
through `importable`, which restores the search path when done.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


def resolve_import(path: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted) and return the object.

    Raises:
        ImportError: with the path in the message, if it cannot be resolved.
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ImportError(f"{path!r} is not an import path of the form package.module:name")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


@contextmanager
def importable(directory: Path) -> Iterator[None]:
    """Make ``directory`` importable for the duration of the block, then restore ``sys.path``.

    Modules imported meanwhile stay cached; only the search path is restored.
    """
    entry = str(directory)
    if entry in sys.path:
        yield
        return
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with suppress(ValueError):
            sys.path.remove(entry)


__all__ = ["importable", "resolve_import"]
