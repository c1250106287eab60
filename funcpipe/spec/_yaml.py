"""A YAML loader that keeps the position of every key and value.

Only the plain data types survive loading: mappings with string keys,
sequences, strings, integers, floats, booleans and null. Every other tag
(``!!python/object``, ``!!binary``, ``!custom``...) is a located error, so
nothing in a spec is ever constructed, let alone executed.

Aliases are shared nodes in the composed tree; expanding them is what a
"billion laughs" document exploits, so construction counts every node it
visits, aliases included, and stops at a fixed budget. Nesting depth is
capped during composition and construction to keep recursion bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from funcpipe.errors import SpecError
from funcpipe.spec._paths import Path, format_path

MAX_BYTES = 4_000_000
"""Largest spec file accepted (a spec is a few kilobytes)."""

MAX_NODES = 100_000
"""Nodes constructed at most, alias expansions included."""

MAX_DEPTH = 64
"""Nesting depth of mappings and sequences at most."""

_CORE = "tag:yaml.org,2002:"
_NULL, _BOOL, _INT, _FLOAT, _STR = (_CORE + t for t in ("null", "bool", "int", "float", "str"))
_MAP, _SEQ, _MERGE = _CORE + "map", _CORE + "seq", _CORE + "merge"
_SCALAR_TAGS = {_NULL, _BOOL, _INT, _FLOAT, _STR}
_PLAIN_HINT = "a spec holds plain YAML only: strings, numbers, booleans, null, lists and mappings"


@dataclass(frozen=True, slots=True)
class Mark:
    """A 1-based position in a named file."""

    file: str
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Place:
    """Where a value (and, for mapping entries, its key) is written.

    Attributes:
        value: where the value starts.
        key: where its key starts (the value's own mark for sequence items).
        style: the scalar style (``None`` for plain, ``'|'`` for a literal block...).
    """

    value: Mark
    key: Mark
    style: str | None = None


@dataclass
class Document:
    """Loaded data with the place of every path in it.

    Attributes:
        data: the plain data (dicts, lists, scalars).
        places: where each path (a tuple of keys and indices) is written.
        file: the file name used in error locations.
        text: the source text.
        written: the text as written of each string later rewritten by
            interpolation or rendering; errors show it instead of the
            rewritten value, which may hold a secret.
    """

    data: Any
    places: dict[Path, Place]
    file: str
    text: str = ""
    written: dict[Path, str] = field(default_factory=dict)

    def place(self, path: Path) -> tuple[Place, Path]:
        """The place of ``path``, or of its nearest written ancestor, and that ancestor."""
        p = path
        while p:
            found = self.places.get(p)
            if found is not None:
                return found, p
            p = p[:-1]
        root = self.places.get(())
        return (root or Place(Mark(self.file, 1, 1), Mark(self.file, 1, 1))), ()

    def error(self, path: Path, message: str, *, hint: str | None = None, at_key: bool = False) -> SpecError:
        """A `SpecError` located at ``path`` (its key when ``at_key``)."""
        place, _ = self.place(path)
        mark = place.key if at_key else place.value
        return SpecError(message, file=mark.file, line=mark.line, col=mark.col, path=format_path(path), hint=hint)


def _mark(file: str, m: yaml.Mark | None) -> Mark:
    if m is None:
        return Mark(file, 1, 1)
    return Mark(file, m.line + 1, m.column + 1)


class _Loader(yaml.SafeLoader):
    """A safe composer with bounded depth and no timestamp or ``=`` resolution."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_DEPTH} levels", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# Dates stay strings (they must survive canonical JSON); '=' is YAML 1.1's
# obscure "value" key, also a string here.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag in _SCALAR_TAGS | {_MERGE}]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_error(file: str, exc: yaml.YAMLError, text: str) -> SpecError:
    mark: yaml.Mark | None = None
    problem = str(exc)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or problem
        if exc.context and exc.problem and "deeper than" not in problem:
            problem = f"{problem} ({exc.context})"
    at = _mark(file, mark)
    hint = "check the indentation and the quoting around this position"
    if mark is not None and 0 <= mark.index < len(text) and text[mark.index] == "\t":
        problem = "a tab character is not allowed here"
        hint = "indent YAML with spaces, never tabs"
    elif "deeper than" in problem:
        hint = "a spec is never nested this deeply; this looks like a generated or hostile file"
    elif "expected a single document" in problem:
        hint = "a spec file holds one YAML document: remove the extra '---'"
    return SpecError(f"YAML syntax error: {problem}", file=file, line=at.line, col=at.col, hint=hint)


class _TooBig(Exception):
    """Construction ran past `MAX_NODES` or `MAX_DEPTH`."""


@dataclass
class _Builder:
    """Turns a composed node tree into plain data and a place per path."""

    file: str
    places: dict[Path, Place] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)
    nodes: int = 0
    active: set[int] = field(default_factory=set)
    scalars: SafeConstructor = field(default_factory=SafeConstructor)

    def build(self, node: Node, path: Path, key: Mark | None) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(f"the document expands to more than {MAX_NODES} nodes")
        if len(path) > MAX_DEPTH:
            raise _TooBig(f"the document nests deeper than {MAX_DEPTH} levels")
        at = _mark(self.file, node.start_mark)
        style = node.style if isinstance(node, ScalarNode) else None
        self.places[path] = Place(at, key or at, style)
        if id(node) in self.active:
            self._fail(path, "an alias refers to a mapping or list that contains it", at)
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path, at)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, path, at)
            if isinstance(node, MappingNode):
                return self._mapping(node, path, at)
        finally:
            self.active.discard(id(node))
        self._fail(path, f"unsupported YAML node {type(node).__name__}", at)
        return None

    def _fail(self, path: Path, message: str, at: Mark, hint: str = _PLAIN_HINT) -> None:
        self.errors.append(
            SpecError(message, file=at.file, line=at.line, col=at.col, path=format_path(path), hint=hint)
        )

    def _check_tag(self, node: Node, allowed: set[str], path: Path, at: Mark) -> bool:
        if node.tag in allowed:
            return True
        tag = node.tag.replace(_CORE, "!!")
        if tag.startswith("!!python/"):
            message = f"the tag {tag!r} is not allowed: nothing in a spec is constructed or executed"
        else:
            message = f"unsupported YAML tag {tag!r}"
        self._fail(path, message, at)
        return False

    def _scalar(self, node: ScalarNode, path: Path, at: Mark) -> Any:
        if not self._check_tag(node, _SCALAR_TAGS, path, at):
            return None
        if node.tag == _STR:
            return node.value
        try:
            if node.tag == _NULL:
                return None
            if node.tag == _BOOL:
                return self.scalars.construct_yaml_bool(node)
            if node.tag == _INT:
                return self.scalars.construct_yaml_int(node)
            return self.scalars.construct_yaml_float(node)
        except (ValueError, KeyError, IndexError):
            kind = node.tag.replace(_CORE, "")
            self._fail(path, f"{node.value!r} is not a valid {kind}", at)
            return None

    def _sequence(self, node: SequenceNode, path: Path, at: Mark) -> list[Any]:
        if not self._check_tag(node, {_SEQ}, path, at):
            return []
        return [self.build(child, (*path, i), None) for i, child in enumerate(node.value)]

    def _mapping(self, node: MappingNode, path: Path, at: Mark) -> dict[str, Any]:
        if not self._check_tag(node, {_MAP}, path, at):
            return {}
        out: dict[str, Any] = {}
        first_seen: dict[str, Mark] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            key_at = _mark(self.file, key_node.start_mark)
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            key = self._key(key_node, path, key_at)
            if key is None:
                continue
            if key in first_seen:
                first = first_seen[key]
                self._fail(
                    (*path, key),
                    f"duplicate key {key!r} (first written at line {first.line})",
                    key_at,
                    hint="a mapping holds each key once: remove or rename one of them",
                )
                self.places.setdefault((*path, key), Place(key_at, key_at))
                continue
            first_seen[key] = key_at
            out[key] = self.build(value_node, (*path, key), key_at)
        for merged in merges:
            self._merge(merged, path, out)
        return out

    def _merge(self, node: Node, path: Path, out: dict[str, Any]) -> None:
        # '<<: *defaults' copies the keys a mapping does not set itself; of
        # several merged mappings, the first one listed wins.
        sources = node.value if isinstance(node, SequenceNode) else [node]
        for source in sources:
            at = _mark(self.file, source.start_mark)
            if not isinstance(source, MappingNode) or source.tag != _MAP:
                self._fail(path, "'<<' merges mappings only", at)
                continue
            self.nodes += 1
            if self.nodes > MAX_NODES:
                raise _TooBig(f"the document expands to more than {MAX_NODES} nodes")
            if id(source) in self.active:
                self._fail(path, "an alias refers to a mapping or list that contains it", at)
                continue
            self.active.add(id(source))
            try:
                for key_node, value_node in source.value:
                    key_at = _mark(self.file, key_node.start_mark)
                    if key_node.tag == _MERGE:
                        self._merge(value_node, path, out)
                        continue
                    key = self._key(key_node, path, key_at)
                    if key is not None and key not in out:
                        out[key] = self.build(value_node, (*path, key), key_at)
            finally:
                self.active.discard(id(source))

    def _key(self, node: Node, path: Path, at: Mark) -> str | None:
        if not isinstance(node, ScalarNode):
            self._fail(path, "a mapping key must be a plain string, not a list or mapping", at)
            return None
        if not self._check_tag(node, _SCALAR_TAGS, path, at):
            return None
        # Keys are kept as written: YAML 1.1 would read `on:` (a retry field)
        # as the boolean true.
        return str(node.value)


def parse_yaml(text: str, file: str, *, allow_empty: bool = False) -> Document:
    """Load YAML text into a `Document`.

    Args:
        text: the YAML source.
        file: the name used in error locations.
        allow_empty: give ``None`` data for an empty document instead of an error.

    Raises:
        SpecErrors: every error found, each located.
    """
    from funcpipe.errors import SpecErrors

    start = Mark(file, 1, 1)
    if len(text) > MAX_BYTES:
        raise SpecErrors(
            [
                SpecError(
                    f"the file is too large ({len(text)} characters; at most {MAX_BYTES})",
                    file=file,
                    hint="a spec is a few kilobytes; split data out into files the stages read",
                )
            ]
        )
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise SpecErrors([_yaml_error(file, exc, text)]) from None
    except RecursionError:
        raise SpecErrors([SpecError("YAML syntax error: the document nests too deeply", file=file)]) from None
    finally:
        loader.dispose()
    if node is None:
        if allow_empty:
            return Document(None, {(): Place(start, start)}, file, text)
        raise SpecErrors(
            [
                SpecError(
                    "the file is empty",
                    file=file,
                    hint="a spec starts with `version: 1`, a `name:` and a list of `stages:`",
                )
            ]
        )
    builder = _Builder(file)
    try:
        data = builder.build(node, (), None)
    except _TooBig as exc:
        at = _mark(file, node.start_mark)
        raise SpecErrors(
            [
                SpecError(
                    f"refused: {exc}",
                    file=file,
                    line=at.line,
                    col=at.col,
                    hint="aliases that expand exponentially ('billion laughs') are not loaded",
                )
            ]
        ) from None
    if builder.errors:
        raise SpecErrors(builder.errors)
    return Document(data, builder.places, file, text)


def walk_strings(data: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every string value in ``data`` with its path (keys are not visited)."""
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from walk_strings(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from walk_strings(v, (*path, i))
