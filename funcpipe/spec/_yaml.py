"""A YAML loader that keeps the position of every key and value.

Only the plain data types survive loading: mappings with string keys,
sequences, strings, integers, floats, booleans and null. Every other tag
(``!!python/object``, ``!!binary``, ``!custom``...) is a located error, so
nothing in a spec is ever constructed, let alone executed.

Aliases are shared nodes in the composed tree; expanding them is what a
"billion laughs" document exploits, so construction counts every node it
visits and every scalar character, aliases included, and stops at fixed
budgets. Nesting depth is
capped during composition and construction to keep recursion bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from funcpipe.errors import SpecError
from funcpipe.spec._paths import Path, format_path

MAX_BYTES = 4_000_000
"""Largest spec file accepted (a spec is a few kilobytes)."""

MAX_NODES = 20_000
"""Nodes constructed at most, alias expansions included (a spec has a few hundred)."""

MAX_CHARS = 10_000_000
"""Characters of scalars (keys and values) constructed at most, alias expansions included.

A node budget alone lets a long string aliased many times expand to
gigabytes; this bounds the loaded data by size as well.
"""

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


class _BoundedComposer(Composer):
    """PyYAML's composer with bounded nesting depth."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[attr-defined]
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_DEPTH} levels", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Resolver(Resolver):
    """YAML 1.1 scalar resolution without timestamps or the ``=`` value key."""


# Dates stay strings (they must survive canonical JSON); '=' is YAML 1.1's
# obscure "value" key, also a string here.
_Resolver.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag in _SCALAR_TAGS | {_MERGE}]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}


class _PyLoader(Reader, Scanner, Parser, _BoundedComposer, _Resolver):
    """The pure-Python loader, used when PyYAML is built without libyaml."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _BoundedComposer.__init__(self)
        _Resolver.__init__(self)

    def dispose(self) -> None:
        """Release the parser's state."""
        Parser.dispose(self)


def _c_parser() -> type | None:
    try:
        from yaml._yaml import CParser
    except ImportError:  # PyYAML built without libyaml
        return None
    return CParser


_CParser = _c_parser()


@lru_cache(maxsize=1)
def _c_loader_class(parser: type) -> type:
    class _CLoader(_BoundedComposer, parser, _Resolver):  # type: ignore[misc]
        """libyaml's event parser under the bounded Python composer."""

        def __init__(self, stream: str) -> None:
            parser.__init__(self, stream)  # type: ignore[misc]
            _BoundedComposer.__init__(self)
            _Resolver.__init__(self)

    return _CLoader


def _loader(text: str) -> Any:
    # libyaml parses events several times faster than pure Python; the tree
    # is still composed in Python, where depth is bounded (libyaml's own
    # composer recurses in C and crashes on deeply nested input).
    if _CParser is None:
        return _PyLoader(text)
    return _c_loader_class(_CParser)(text)


def _reader_error(file: str, exc: yaml.reader.ReaderError, text: str) -> SpecError:
    before = text[: exc.position]
    line = before.count("\n") + 1
    col = exc.position - (before.rfind("\n") + 1) + 1
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return SpecError(
        f"YAML syntax error: the character {char!r} (U+{ord(char):04X}) is not allowed in YAML",
        file=file,
        line=line,
        col=col,
        hint="remove the control character; a spec is plain UTF-8 text",
    )


def _char_at(text: str, at: Mark) -> str:
    lines = text.splitlines()
    if 0 < at.line <= len(lines) and 0 < at.col <= len(lines[at.line - 1]):
        return lines[at.line - 1][at.col - 1]
    return ""


def _yaml_error(file: str, exc: yaml.YAMLError, text: str) -> SpecError:
    mark: yaml.Mark | None = None
    problem = str(exc)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or problem
        if exc.problem == "second occurrence" and exc.context and exc.context_mark:
            anchor = exc.context.split(";")[0].removeprefix("found ")
            problem = f"{anchor} (first defined at line {exc.context_mark.line + 1})"
        elif exc.context and exc.problem and "deeper than" not in problem:
            problem = f"{problem} ({exc.context})"
    if "nesting depth" in problem:
        # libyaml (since PyYAML 6.0.3) refuses deep nesting itself, before
        # our composer sees it; say it in the same words as our own bound.
        problem = f"nesting deeper than {MAX_DEPTH} levels"
    at = _mark(file, mark)
    hint = "check the indentation and the quoting around this position"
    if _char_at(text, at) == "\t":
        problem = "a tab character is not allowed here"
        hint = "indent YAML with spaces, never tabs"
    elif "deeper than" in problem:
        hint = "a spec is never nested this deeply; this looks like a generated or hostile file"
    elif "'{'" in problem or "'}'" in problem:
        hint = 'inside {...} and [...], quote values that hold braces: "${VAR}", "{{ params.x }}"'
    elif "undefined alias" in problem or "duplicate anchor" in problem:
        hint = "define each anchor (&name) once, before the aliases (*name) that use it"
    elif "expected a single document" in problem:
        hint = "a spec file holds one YAML document: remove the extra '---'"
    return SpecError(f"YAML syntax error: {problem}", file=file, line=at.line, col=at.col, hint=hint)


class _TooBig(Exception):
    """Construction ran past `MAX_NODES`, `MAX_CHARS` or `MAX_DEPTH`."""


@dataclass
class _Builder:
    """Turns a composed node tree into plain data and a place per path."""

    file: str
    places: dict[Path, Place] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)
    nodes: int = 0
    chars: int = 0
    active: set[int] = field(default_factory=set)
    scalars: SafeConstructor = field(default_factory=SafeConstructor)

    def build(self, node: Node, path: Path, key: Mark | None) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(f"the document expands to more than {MAX_NODES} nodes")
        if len(path) > MAX_DEPTH:
            raise _TooBig(f"the document nests deeper than {MAX_DEPTH} levels")
        at = _mark(self.file, node.start_mark)
        # libyaml writes a plain style as "", PyYAML as None.
        style = (node.style or None) if isinstance(node, ScalarNode) else None
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

    def _count_chars(self, node: ScalarNode) -> None:
        self.chars += len(node.value)
        if self.chars > MAX_CHARS:
            raise _TooBig(f"the document expands to more than {MAX_CHARS} characters of text")

    def _scalar(self, node: ScalarNode, path: Path, at: Mark) -> Any:
        self._count_chars(node)
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
            hint = _PLAIN_HINT
            if isinstance(node, MappingNode) and node.flow_style:
                hint = 'an unquoted {{ ... }} is a YAML mapping: quote templates, "{{ params.x }}"'
            self._fail(path, "a mapping key must be a plain string, not a list or mapping", at, hint)
            return None
        if not self._check_tag(node, _SCALAR_TAGS, path, at):
            return None
        self._count_chars(node)
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
    try:
        # The reader checks for unprintable characters as it is created.
        loader = _loader(text)
    except yaml.reader.ReaderError as exc:
        raise SpecErrors([_reader_error(file, exc, text)]) from None
    try:
        node = loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        raise SpecErrors([_reader_error(file, exc, text)]) from None
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
