"""Sink stages: JSON Lines files and standard output. Sinks pass written items on."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence

from funcpipe.core import AsyncGen, AsyncPlan, Err, ErrCode, ErrInfo, Item, Ok, Result
from funcpipe.stages._jsonl_file import JsonlFile, JsonlFileError, item_json
from funcpipe.stages.base import StageContext, Transform
from funcpipe.stages.config import JsonlSinkConfig, StdoutSinkConfig


def _jsonl_file(config: JsonlSinkConfig, ctx: StageContext) -> JsonlFile:
    """The sink's file, its id index in the run's state directory (keyed by the file's absolute path)."""
    path = ctx.resolve(config.path)
    digest = hashlib.sha256(str(path.absolute()).encode("utf-8")).hexdigest()[:24]
    return JsonlFile(path, ctx.state_dir / "sinks" / f"{digest}.ids.sqlite")


def _opened(sink: JsonlFile, shown: str) -> Result[None, ErrInfo]:
    try:
        sink.open()
    except JsonlFileError as exc:
        return Err(ErrInfo(ErrCode.BAD_INPUT, str(exc)))
    except (OSError, sqlite3.Error) as exc:
        return Err(ErrInfo(ErrCode.TRANSIENT, f"cannot open {shown}: {exc}"))
    return Ok(None)


def prepare_sink_jsonl(config: JsonlSinkConfig, ctx: StageContext) -> AsyncPlan[None]:
    """Check the file before any source is read: a torn last line is cut, any other bad line stops the run."""

    async def run() -> Result[None, ErrInfo]:
        sink = _jsonl_file(config, ctx)
        try:
            return await asyncio.to_thread(_opened, sink, config.path)
        finally:
            sink.close()

    return run


def sink_jsonl(config: JsonlSinkConfig, ctx: StageContext) -> Transform:
    """Append items to a JSON Lines file, idempotently across resumed runs, holding no ids in memory."""
    sink = _jsonl_file(config, ctx)

    def write(items: Sequence[Item]) -> Result[int, ErrInfo]:
        opened = _opened(sink, config.path)
        if isinstance(opened, Err):
            return opened
        try:
            return Ok(sink.write(items))
        except (OSError, sqlite3.Error) as exc:
            return Err(ErrInfo(ErrCode.TRANSIENT, f"cannot write {config.path}: {exc}"))

    def call(items: Sequence[Item]) -> AsyncPlan[Sequence[Result[Item, ErrInfo]]]:
        async def run() -> Result[Sequence[Result[Item, ErrInfo]], ErrInfo]:
            written = await asyncio.to_thread(write, items)
            if isinstance(written, Err):
                return written
            return Ok([Ok(it) for it in items])

        return run

    def transform(upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        written = ctx.map_batches(upstream, call)

        def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            async def closing() -> AsyncIterator[Result[Item, ErrInfo]]:
                try:
                    async with contextlib.aclosing(written()) as it:  # type: ignore[type-var]
                        async for r in it:
                            yield r
                finally:
                    sink.close()  # the index's connection; every write has returned by now

            return closing()

        return run

    return transform


def sink_stdout(config: StdoutSinkConfig, ctx: StageContext) -> Transform:
    """Print each item: a JSON line, or its text."""

    def line(item: Item) -> str:
        if config.format == "text":
            data = item.data
            if isinstance(data, dict) and "text" in data:
                data = data["text"]
            return str(data)
        return item_json(item)

    def call(items: Sequence[Item]) -> AsyncPlan[Sequence[Result[Item, ErrInfo]]]:
        async def run() -> Result[Sequence[Result[Item, ErrInfo]], ErrInfo]:
            sys.stdout.write("".join(line(it) + "\n" for it in items))
            sys.stdout.flush()
            return Ok([Ok(it) for it in items])

        return run

    def transform(upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        return ctx.map_batches(upstream, call)

    return transform
