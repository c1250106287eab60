"""``--update``: write what a run produced into the exact expectations of a test file, as a snapshot.

Only the text of each expectation's value is replaced; everything else in
the file (comments, layout, key order, the other values) stays as written.
The value's span comes from PyYAML's node marks (composing only: no Python
object is ever constructed). A value written in flow style or on one line
stays so when the new one fits on a line; otherwise it becomes a block
indented under its key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Any

import yaml

from funcpipe.pipetest.results import Snapshot, SpecPath

_LINE = 100


class _Dumper(yaml.SafeDumper):
    """Block YAML where multi-line text is written as a literal block (``|``), as people write it."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Only text that reads back the same as a literal block is written as one.
    plain = value == value.strip() and not any(line != line.rstrip() for line in value.splitlines())
    style = "|" if "\n" in value and plain else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def _node_at(root: yaml.Node, path: SpecPath) -> tuple[yaml.Node, yaml.Node | None, bool] | None:
    """The value node at ``path``, its key node (None for list items), and whether it lies inside flow style."""
    node: yaml.Node = root
    key: yaml.Node | None = None
    in_flow = False
    for part in path:
        in_flow = in_flow or bool(getattr(node, "flow_style", False))
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if found is None:
                return None
            key, node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            key, node = None, node.value[part]
        else:
            return None
    return node, key, in_flow


def _end(node: yaml.Node) -> int:
    # A block collection's end mark lies after trailing blank and comment lines; its last value's does not.
    if isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
        return _end(node.value[-1])
    if isinstance(node, yaml.MappingNode) and node.value and not node.flow_style:
        return _end(node.value[-1][1])
    return int(node.end_mark.index)


def _flow(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, sort_keys=False, width=10**9)
    return text.strip().removesuffix("...").strip()


def _block(value: Any, indent: int) -> str:
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=False, allow_unicode=True, sort_keys=False, width=_LINE)
    text = text.removesuffix("...\n")
    pad = " " * indent
    return "\n".join(pad + line if line else line for line in text.rstrip("\n").splitlines())


def _replacement(text: str, node: yaml.Node, key: yaml.Node | None, value: Any, in_flow: bool) -> str:
    start = int(node.start_mark.index)
    column = int(node.start_mark.column)
    line_start = text.rfind("\n", 0, start) + 1
    on_own_line = text[line_start:start].strip() in ("", "-")
    flow = _flow(value)
    scalar_or_empty = not isinstance(value, dict | list) or not value
    if in_flow or scalar_or_empty or (column + len(flow) <= _LINE and "\n" not in flow):
        # Inside {...} or [...] only flow style is YAML.
        return flow
    if on_own_line and isinstance(node, yaml.SequenceNode | yaml.MappingNode) and not node.flow_style:
        # A block collection: the new block starts where the old one did, at its indentation.
        return _block(value, column)[column:]
    # A value written after its key on the same line: the block goes below, indented under the key.
    key_column = int(key.start_mark.column) if key is not None else column
    return "\n" + _block(value, key_column + 2)


def apply_snapshots(path: FsPath, snapshots: Sequence[Snapshot]) -> bool:
    """Rewrite the values of ``snapshots`` in the test file at ``path``; True if anything changed."""
    text = path.read_text(encoding="utf-8")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return False
    edits: list[tuple[int, int, str]] = []
    for snap in snapshots:
        found = _node_at(root, snap.path)
        if found is None:
            continue
        node, key, in_flow = found
        start, end = int(node.start_mark.index), _end(node)
        # A block scalar's end mark lies after its line break and the next line's indentation.
        while end > start and text[end - 1] in " \t\r\n":
            end -= 1
        new = _replacement(text, node, key, snap.value, in_flow)
        edits.append((start, end, new))
    changed = False
    # From the end, so earlier offsets stay valid; nested spans never overlap (each path is a leaf or a whole list).
    for start, end, new in sorted(edits, reverse=True):
        if text[start:end] != new:
            if new.startswith("\n"):
                # The block goes below its key: no space is left at the end of the key's line.
                start = len(text[:start].rstrip(" "))
            text = text[:start] + new + text[end:]
            changed = True
    if changed:
        path.write_text(text, encoding="utf-8")
    return changed


__all__ = ["apply_snapshots"]
