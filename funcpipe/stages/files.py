"""Source stages: files under a directory, and JSON Lines.

Both read lazily and hold one file (``source.files``) or one batch of lines
(``source.jsonl``) at a time. Whatever goes wrong with one file or one line
becomes a ``BAD_INPUT`` error naming it, and the rest flows on.
`check_source_path` says up front why a source would read nothing; the spec
checks and the runner both call it, so "missing" means the same thing at
``funcpipe validate`` and at run start.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import itertools
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import BinaryIO

from funcpipe.core import AsyncGen, Err, ErrCode, ErrInfo, Item, Ok, Result, stable_id
from funcpipe.stages.base import StageContext, Transform
from funcpipe.stages.config import FilesSourceConfig, JsonlSourceConfig

_EMPTY_HINT = "add allow_empty: true if an empty source is expected"
_BOM = b"\xef\xbb\xbf"
_BATCH_BYTES = 1 << 20
"""Bytes of JSONL read per trip to the worker thread (lines are never split)."""


def file_item_id(rel_path: str) -> str:
    """A file's source id: stable across edits, so a changed file replaces its old chunks."""
    return stable_id({"source": "files", "path": rel_path})


# -- what a source would read -------------------------------------------------


@dataclass(frozen=True)
class PathProblem:
    """Why a source's ``path`` would read nothing, or could not be read.

    Attributes:
        message: what is wrong, naming the path as written.
        hint: how to fix it.
    """

    message: str
    hint: str


def _resolve(base_dir: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base_dir / p


def _iter_files(root: Path, config: FilesSourceConfig) -> Iterator[Path]:
    """The files under ``root`` matching the globs and no exclude, unordered, maybe repeated."""
    globs = (config.glob,) if isinstance(config.glob, str) else config.glob
    for g in globs:
        for p in root.glob(g):
            if config.exclude and any(fnmatch(p.relative_to(root).as_posix(), pat) for pat in config.exclude):
                continue
            if p.is_file():
                yield p


def list_files(root: Path, config: FilesSourceConfig) -> list[Path]:
    """The files ``source.files`` reads under ``root``, sorted: ``root`` itself if it is a file, none if absent."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(set(_iter_files(root, config)))


def _did_you_mean(written: str, resolved: Path) -> str:
    """`` (did you mean 'x'?)`` with the first missing part of the path replaced by the closest name, or nothing."""
    missing = resolved
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    try:
        names = [p.name for p in itertools.islice(missing.parent.iterdir(), 10_000)]
    except OSError:
        return ""
    guess = difflib.get_close_matches(missing.name, names, n=1, cutoff=0.6)
    rest = resolved.relative_to(missing).parts
    parts = list(Path(written).parts)
    k = len(parts) - 1 - len(rest)
    if not guess or k < 0 or parts[k] != missing.name:
        return ""
    parts[k] = guess[0]
    if not (missing.parent / guess[0]).joinpath(*rest).exists():
        parts = parts[: k + 1]
    return f" (did you mean {Path(*parts).as_posix()!r}?)"


def _missing(written: str, resolved: Path, what: str) -> PathProblem:
    relative = "" if Path(written).is_absolute() else "relative paths start at the spec file's directory: "
    return PathProblem(
        f"{what} {written!r} does not exist{_did_you_mean(written, resolved)}",
        f"{relative}fix the path, or {_EMPTY_HINT}",
    )


def _glob_text(config: FilesSourceConfig) -> str:
    globs = (config.glob,) if isinstance(config.glob, str) else config.glob
    text = "glob " + ", ".join(repr(g) for g in globs)
    if config.exclude:
        text += " (with exclude " + ", ".join(repr(x) for x in config.exclude) + ")"
    return text


def _what_is_there(root: Path) -> str:
    suffixes: set[str] = set()
    count = 0
    for p in itertools.islice(root.rglob("*"), 10_000):
        if p.is_file():
            count += 1
            if p.suffix:
                suffixes.add(p.suffix)
    if not count:
        return "the directory holds no file"
    kinds = ", ".join(f"*{s}" for s in sorted(suffixes)[:8])
    return f"the directory holds {count}{'+' if count >= 10_000 else ''} file(s)" + (f" ({kinds})" if kinds else "")


def check_source_path(config: FilesSourceConfig | JsonlSourceConfig, base_dir: Path) -> PathProblem | None:
    """Why the source configured by ``config`` would read nothing or cannot read, if it would.

    A missing path, and for ``source.files`` a directory where no file
    matches the globs (and for ``source.jsonl`` an empty file), is a problem
    unless ``allow_empty`` is set. A path that exists but cannot be read is
    one always. Relative paths are resolved against ``base_dir``.
    """
    root = _resolve(base_dir, config.path)
    if isinstance(config, JsonlSourceConfig):
        return _check_jsonl(config, root)
    try:
        exists, is_dir, is_file = root.exists(), root.is_dir(), root.is_file()
    except OSError as exc:
        return PathProblem(f"cannot look at {config.path!r}: {exc.strerror}", "check the path and its permissions")
    if not exists:
        return None if config.allow_empty else _missing(config.path, root, "path")
    if is_file:
        if not os.access(root, os.R_OK):
            return PathProblem(f"file {config.path!r} is not readable", "check its permissions")
        return None
    if not is_dir:
        return PathProblem(f"{config.path!r} is neither a file nor a directory", "name a directory or a file")
    if not os.access(root, os.R_OK | os.X_OK):
        return PathProblem(f"directory {config.path!r} is not readable", "check its permissions")
    if config.allow_empty:
        return None
    try:
        found = next(_iter_files(root, config), None)
    except OSError as exc:
        return PathProblem(f"cannot list {config.path!r}: {exc.strerror}", "check the directory's permissions")
    if found is not None:
        return None
    return PathProblem(
        f"no file under {config.path!r} matches {_glob_text(config)}",
        f"{_what_is_there(root)}: fix glob, or {_EMPTY_HINT}",
    )


def _check_jsonl(config: JsonlSourceConfig, path: Path) -> PathProblem | None:
    try:
        if not path.exists():
            return None if config.allow_empty else _missing(config.path, path, "file")
        if path.is_dir():
            return PathProblem(
                f"{config.path!r} is a directory; source.jsonl reads one file",
                "name a .jsonl file, or read the directory with source.files",
            )
        size = path.stat().st_size if path.is_file() else None
    except OSError as exc:
        return PathProblem(f"cannot look at {config.path!r}: {exc.strerror}", "check the path and its permissions")
    if not os.access(path, os.R_OK):
        return PathProblem(f"file {config.path!r} is not readable", "check its permissions")
    if size == 0 and not config.allow_empty:
        return PathProblem(f"file {config.path!r} is empty", f"fill it, or {_EMPTY_HINT}")
    return None


# -- source.files ---------------------------------------------------------------


def _read(path: Path, config: FilesSourceConfig, rel: str) -> Result[Item, ErrInfo]:
    sid = file_item_id(rel)
    base_meta: dict[str, object] = {"path": rel, "name": path.name}
    placeholder = Item(sid, None, base_meta, sid)

    def bad(msg: str, item: Item = placeholder) -> Result[Item, ErrInfo]:
        return Err(ErrInfo(ErrCode.BAD_INPUT, msg, {"item": item, "path": rel}))

    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > config.max_bytes:
                return bad(f"file {rel} is {size} bytes, over max_bytes={config.max_bytes}")
            # Read at most one byte past the limit: a file growing while read is still caught.
            raw = fh.read(config.max_bytes + 1)
    except OSError as exc:
        return bad(f"cannot read {rel}: {exc.strerror or exc}")
    if len(raw) > config.max_bytes:
        return bad(f"file {rel} grew past max_bytes={config.max_bytes} while it was read")
    meta = {**base_meta, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    if config.mode == "bytes":
        return Ok(Item(sid, raw, meta, sid))
    try:
        text = raw.decode(config.encoding)
    except UnicodeDecodeError as exc:
        return bad(
            f"file {rel} is not valid {config.encoding} (byte {exc.start}): read it with mode: bytes or set encoding",
            Item(sid, None, meta, sid),
        )
    # The bytes go before the text flows on: a large file is held once, as text.
    del raw
    return Ok(Item(sid, text, meta, sid))


def source_files(config: FilesSourceConfig, ctx: StageContext) -> Transform:
    """Emit one item per file under ``path`` matching ``glob``, in path order.

    Undecodable, unreadable and oversized files, and files that vanish
    between listing and reading, become ``BAD_INPUT`` errors naming the
    file; the other files flow on. One file is read at a time.
    """
    root = ctx.resolve(config.path)

    def read(p: Path) -> Result[Item, ErrInfo]:
        rel = p.relative_to(root).as_posix() if p != root else p.name
        res = _read(p, config, rel)
        return Err(res.error.with_meta(stage=ctx.stage_id)) if isinstance(res, Err) else res

    def transform(_upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            if not config.allow_empty and not await asyncio.to_thread(root.exists):
                # Vanished since the run's start check. Listing nothing would make a
                # mirror store delete every row of this source.
                yield Err(_missing_path(config.path, ctx.stage_id))
                return
            try:
                paths = await asyncio.to_thread(list_files, root, config)
            except OSError as exc:
                yield Err(
                    ErrInfo(
                        ErrCode.BAD_INPUT,
                        f"cannot list {config.path}: {exc.strerror or exc}",
                        {"path": config.path, "stage": ctx.stage_id},
                    )
                )
                return
            for p in paths:
                # Yielded straight from the call: no local keeps a large file alive
                # while the stages downstream work on it.
                yield await asyncio.to_thread(read, p)

        return run

    return transform


# -- source.jsonl ---------------------------------------------------------------


class _Lines:
    """Numbered raw lines of a binary file, read in batches; blank lines are skipped.

    A line longer than ``limit`` bytes is skipped to its end without being
    held, and reported as ``(lineno, None)``.
    """

    def __init__(self, fh: BinaryIO, limit: int) -> None:
        self.fh = fh
        self.limit = limit
        self.lineno = 0

    def batch(self) -> list[tuple[int, bytes | None]]:
        out: list[tuple[int, bytes | None]] = []
        held = 0
        while held < _BATCH_BYTES:
            # One byte for the newline, one to tell "exactly at the limit" from "over it".
            line = self.fh.readline(self.limit + 2)
            if not line:
                break
            self.lineno += 1
            if len(line) > self.limit + 1 or (len(line) == self.limit + 1 and not line.endswith(b"\n")):
                self._skip_rest(line)
                out.append((self.lineno, None))
                continue
            if self.lineno == 1 and line.startswith(_BOM):
                line = line[len(_BOM) :]
            if line.strip():
                out.append((self.lineno, line))
                held += len(line)
        return out

    def _skip_rest(self, line: bytes) -> None:
        while line and not line.endswith(b"\n"):
            line = self.fh.readline(_BATCH_BYTES)


def source_jsonl(config: JsonlSourceConfig, ctx: StageContext) -> Transform:
    """Emit one item per line of a JSON Lines file.

    Lines are split on ``\\n`` only (a ``\\r`` before it is ignored), a UTF-8
    byte-order mark on the first line is dropped and blank lines are skipped.
    A line that is not UTF-8, not JSON, not a JSON object, longer than
    ``max_line_bytes``, or lacks its ``id_field``/``text_field`` becomes a
    ``BAD_INPUT`` error with its line number; so does a file that cannot be
    opened or read (with the line reached). The other lines flow on.

    With ``id_field``, a record whose id an earlier line of the file already
    had is a ``BAD_INPUT`` error naming the id and that line; the first
    record is the one kept (see `_Duplicates`).
    """
    path = ctx.resolve(config.path)

    def transform(_upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            try:
                fh = await asyncio.to_thread(path.open, "rb")
            except OSError as exc:
                yield Err(_file_error(config, ctx, f"cannot open {config.path}: {exc.strerror or exc}", None))
                return
            seen = _Duplicates()
            with fh, contextlib.closing(seen):
                lines = _Lines(fh, config.max_line_bytes)
                while True:
                    try:
                        batch = await asyncio.to_thread(lines.batch)
                    except OSError as exc:
                        msg = f"cannot read {config.path} after line {lines.lineno}: {exc.strerror or exc}"
                        yield Err(_file_error(config, ctx, msg, lines.lineno))
                        return
                    if not batch:
                        return
                    for lineno, raw in batch:
                        res = _jsonl_item(raw, lineno, config, ctx)
                        if isinstance(res, Ok) and config.id_field is not None:
                            res = seen.check(res.value, lineno, config, ctx)
                        yield res

        return run

    return transform


def _missing_path(path: str, stage_id: str) -> ErrInfo:
    return ErrInfo(
        ErrCode.BAD_INPUT,
        f"path {path} does not exist: nothing was listed, so no row of this source is deleted; "
        "fix with.path (relative to the spec file)",
        {"stage": stage_id, "path": path},
    )


# -- duplicate ids in one JSON Lines file ----------------------------------------------


class _Duplicates:
    """The ids seen so far in one read of a JSON Lines file, as 16-byte digests with their first line.

    Two records with one id would otherwise share a source id, and their
    chunks would replace each other; the later one is refused instead. The
    digests live in a temporary SQLite database (an unnamed one: SQLite keeps
    its pages in a small cache and spills the rest to a temporary file), so
    memory stays flat however many lines the file has.
    """

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._db.execute("CREATE TABLE seen (digest BLOB PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID")
        self._db.execute("BEGIN")  # one transaction for the whole read: the data is thrown away after it

    def close(self) -> None:
        """Drop the digests."""
        self._db.close()

    def check(self, item: Item, lineno: int, config: JsonlSourceConfig, ctx: StageContext) -> Result[Item, ErrInfo]:
        """``item`` if its source id is new, else a ``BAD_INPUT`` error naming the id and its first line."""
        digest = hashlib.blake2b(item.source_id.encode("utf-8"), digest_size=16).digest()
        added = self._db.execute("INSERT OR IGNORE INTO seen (digest, line) VALUES (?, ?)", (digest, lineno))
        if added.rowcount == 1:
            return Ok(item)
        first = int(self._db.execute("SELECT line FROM seen WHERE digest = ?", (digest,)).fetchone()[0])
        # Its own source id (by line), so the accounting keeps the first record done.
        sid = stable_id({"source": "jsonl", "path": config.path, "line": lineno})
        field = config.id_field or ""
        value = item.data.get(field) if isinstance(item.data, dict) else item.meta.get(field, "?")
        return Err(
            ErrInfo(
                ErrCode.BAD_INPUT,
                f"line {lineno}: duplicate {config.id_field} {value!r}: line {first} has the same id "
                f"(the record of line {first} is kept). Fix: give each record its own {config.id_field}",
                {"item": Item(sid, item.data, item.meta, sid), "stage": ctx.stage_id, "duplicate_of_line": first},
            )
        )


def _file_error(config: JsonlSourceConfig, ctx: StageContext, msg: str, line: int | None) -> ErrInfo:
    sid = stable_id({"source": "jsonl", "path": config.path})
    meta: dict[str, object] = {"path": config.path}
    if line is not None:
        meta["line"] = line
    return ErrInfo(ErrCode.BAD_INPUT, msg, {"item": Item(sid, None, meta, sid), "stage": ctx.stage_id})


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _jsonl_item(raw: bytes | None, lineno: int, config: JsonlSourceConfig, ctx: StageContext) -> Result[Item, ErrInfo]:
    meta: dict[str, object] = {"line": lineno, "path": config.path}
    line_sid = stable_id({"source": "jsonl", "path": config.path, "line": lineno})

    def bad(msg: str, data: object) -> Result[Item, ErrInfo]:
        return Err(
            ErrInfo(
                ErrCode.BAD_INPUT,
                f"line {lineno}: {msg}",
                {"item": Item(line_sid, data, meta, line_sid), "stage": ctx.stage_id},
            )
        )

    if raw is None:
        return bad(
            f"longer than max_line_bytes={config.max_line_bytes}: raise max_line_bytes or split the record", None
        )
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return bad(f"not valid UTF-8 (byte {exc.start + 1} of the line)", raw.decode("utf-8", "replace").rstrip("\r\n"))
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return bad(f"invalid JSON: {exc.msg}", line.rstrip("\r\n"))
    except RecursionError:
        return bad("invalid JSON: nested too deeply", None)
    if not isinstance(obj, dict):
        return bad(f"expected a JSON object, got {_kind(obj)}", obj)
    key: object = obj
    if config.id_field is not None:
        if config.id_field not in obj:
            return bad(f"no field {config.id_field!r}", obj)
        ident = obj[config.id_field]
        if isinstance(ident, bool) or not isinstance(ident, str | int) or ident == "":
            shown = "an empty string" if ident == "" else _kind(ident)
            return bad(f"field {config.id_field!r} should be a string or an integer id, got {shown}", obj)
        key = {"id": ident}
    sid = stable_id({"source": "jsonl", "key": key})
    data: object = obj
    if config.text_field is not None:
        text = obj.get(config.text_field)
        if not isinstance(text, str):
            got = "it is missing" if config.text_field not in obj else f"got {_kind(text)}"
            return Err(
                ErrInfo(
                    ErrCode.BAD_INPUT,
                    f"line {lineno}: field {config.text_field!r} is missing or not text ({got})",
                    {"item": Item(sid, obj, meta, sid), "stage": ctx.stage_id},
                )
            )
        data = text
        meta.update({k: v for k, v in obj.items() if k != config.text_field and _scalar(v)})
    return Ok(Item(sid, data, meta, sid))


def _scalar(v: object) -> bool:
    return v is None or isinstance(v, str | int | float | bool)
