"""Source stages: files under a directory, and JSON Lines."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from pathlib import Path

from funcpipe.core import AsyncGen, Err, ErrCode, ErrInfo, Item, Ok, Result, stable_id
from funcpipe.stages.base import StageContext, Transform
from funcpipe.stages.config import FilesSourceConfig, JsonlSourceConfig


def file_item_id(rel_path: str) -> str:
    """A file's source id: stable across edits, so a changed file replaces its old chunks."""
    return stable_id({"source": "files", "path": rel_path})


def _list_files(root: Path, config: FilesSourceConfig) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        return []
    globs = (config.glob,) if isinstance(config.glob, str) else config.glob
    paths = sorted({p for g in globs for p in root.glob(g) if p.is_file()})
    if config.exclude:
        paths = [p for p in paths if not any(fnmatch(p.relative_to(root).as_posix(), pat) for pat in config.exclude)]
    return sorted(paths)


def _read(path: Path, config: FilesSourceConfig, rel: str) -> Result[Item, ErrInfo]:
    sid = file_item_id(rel)
    base_meta: dict[str, object] = {"path": rel, "name": path.name}
    placeholder = Item(sid, None, base_meta, sid)
    try:
        size = path.stat().st_size
        if size > config.max_bytes:
            return Err(
                ErrInfo(
                    ErrCode.BAD_INPUT,
                    f"file {rel} is {size} bytes, over max_bytes={config.max_bytes}",
                    {"item": placeholder, "path": rel},
                )
            )
        raw = path.read_bytes()
    except OSError as exc:
        return Err(
            ErrInfo(
                ErrCode.BAD_INPUT,
                f"cannot read {rel}: {exc.strerror}",
                {"item": placeholder, "path": rel},
            )
        )
    meta = {**base_meta, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    if config.mode == "bytes":
        return Ok(Item(sid, raw, meta, sid))
    try:
        text = raw.decode(config.encoding)
    except UnicodeDecodeError as exc:
        return Err(
            ErrInfo(
                ErrCode.BAD_INPUT,
                f"file {rel} is not valid {config.encoding} (byte {exc.start}): read it with mode: bytes "
                "or set encoding",
                {"item": Item(sid, None, meta, sid), "path": rel},
            )
        )
    return Ok(Item(sid, text, meta, sid))


def source_files(config: FilesSourceConfig, ctx: StageContext) -> Transform:
    """Emit one item per file under ``path`` matching ``glob``, in path order.

    Undecodable, unreadable and oversized files become ``BAD_INPUT`` errors
    naming the file; the other files flow on.
    """
    root = ctx.resolve(config.path)

    def transform(_upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            if not await asyncio.to_thread(root.exists):
                # Listing nothing here would make a mirror store delete every row of this source.
                yield Err(_missing_path(config.path, ctx.stage_id))
                return
            paths = await asyncio.to_thread(_list_files, root, config)
            for p in paths:
                rel = p.relative_to(root).as_posix() if p != root else p.name
                res = await asyncio.to_thread(_read, p, config, rel)
                if isinstance(res, Err):
                    yield Err(res.error.with_meta(stage=ctx.stage_id))
                else:
                    yield res

        return run

    return transform


def source_jsonl(config: JsonlSourceConfig, ctx: StageContext) -> Transform:
    """Emit one item per line of a JSON Lines file; a bad line becomes a ``BAD_INPUT`` error.

    With ``id_field``, a record whose id an earlier line of the file already
    had is a ``BAD_INPUT`` error naming the id and that line; the first
    record is the one kept (see `_Duplicates`).
    """
    path = ctx.resolve(config.path)

    def transform(_upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            seen = _Duplicates()
            with path.open("r", encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    res = _jsonl_item(line, lineno, config, ctx)
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
    chunks would replace each other; the later one is refused instead. Memory
    is about 100 bytes per distinct id.
    """

    def __init__(self) -> None:
        self._first: dict[bytes, int] = {}

    def check(self, item: Item, lineno: int, config: JsonlSourceConfig, ctx: StageContext) -> Result[Item, ErrInfo]:
        """``item`` if its source id is new, else a ``BAD_INPUT`` error naming the id and its first line."""
        digest = hashlib.blake2b(item.source_id.encode("utf-8"), digest_size=16).digest()
        first = self._first.setdefault(digest, lineno)
        if first == lineno:
            return Ok(item)
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


def _jsonl_item(line: str, lineno: int, config: JsonlSourceConfig, ctx: StageContext) -> Result[Item, ErrInfo]:
    meta: dict[str, object] = {"line": lineno, "path": config.path}
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        sid = stable_id({"source": "jsonl", "path": config.path, "line": lineno})
        bad = Item(sid, line.rstrip("\n"), meta, sid)
        return Err(
            ErrInfo(
                ErrCode.BAD_INPUT,
                f"line {lineno}: invalid JSON: {exc.msg}",
                {"item": bad, "stage": ctx.stage_id},
            )
        )
    key: object = obj
    if config.id_field is not None:
        if not isinstance(obj, dict) or config.id_field not in obj:
            sid = stable_id({"source": "jsonl", "path": config.path, "line": lineno})
            bad = Item(sid, obj, meta, sid)
            return Err(
                ErrInfo(
                    ErrCode.BAD_INPUT,
                    f"line {lineno}: no field {config.id_field!r}",
                    {"item": bad, "stage": ctx.stage_id},
                )
            )
        key = {"id": obj[config.id_field]}
    sid = stable_id({"source": "jsonl", "key": key})
    data: object = obj
    if config.text_field is not None:
        if not isinstance(obj, dict) or not isinstance(obj.get(config.text_field), str):
            bad = Item(sid, obj, meta, sid)
            return Err(
                ErrInfo(
                    ErrCode.BAD_INPUT,
                    f"line {lineno}: field {config.text_field!r} is missing or not text",
                    {"item": bad, "stage": ctx.stage_id},
                )
            )
        data = obj[config.text_field]
        meta.update({k: v for k, v in obj.items() if k != config.text_field and _scalar(v)})
    return Ok(Item(sid, data, meta, sid))


def _scalar(v: object) -> bool:
    return v is None or isinstance(v, str | int | float | bool)
