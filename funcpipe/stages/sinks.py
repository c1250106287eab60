"""Sink stages: JSON Lines files and standard output. Sinks pass written items on."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from funcpipe.core import AsyncGen, AsyncPlan, Err, ErrCode, ErrInfo, Item, Ok, Result
from funcpipe.stages.base import StageContext, Transform
from funcpipe.stages.config import JsonlSinkConfig, StdoutSinkConfig


def item_json(item: Item) -> str:
    """One JSON line for ``item`` (DESIGN.md's JSON form)."""
    return json.dumps(item.to_json(), ensure_ascii=False, sort_keys=True, default=str)


class JsonlFile:
    """An append-only JSONL file that never writes an id twice.

    On open, a torn last line (from a crash mid-write) is cut off and the ids
    already present are read, so a resumed run appends only what is missing.
    Each write is flushed and fsynced before the items count as committed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids: set[str] | None = None

    def _open(self) -> set[str]:
        ids: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return ids
        good = 0
        with self.path.open("rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                try:
                    obj = json.loads(line)
                except ValueError:
                    break
                if isinstance(obj, dict) and "id" in obj:
                    ids.add(str(obj["id"]))
                good += len(line)
        if good != self.path.stat().st_size:
            with self.path.open("r+b") as fh:
                fh.truncate(good)
        return ids

    def write(self, items: Sequence[Item]) -> int:
        """Append the items not yet in the file; returns how many were written."""
        if self._ids is None:
            self._ids = self._open()
        lines = []
        for it in items:
            if it.id in self._ids:
                continue
            self._ids.add(it.id)
            lines.append(item_json(it) + "\n")
        if lines:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
        return len(lines)


def sink_jsonl(config: JsonlSinkConfig, ctx: StageContext) -> Transform:
    """Append items to a JSON Lines file, idempotently across resumed runs."""
    sink = JsonlFile(ctx.resolve(config.path))

    def call(items: Sequence[Item]) -> AsyncPlan[Sequence[Result[Item, ErrInfo]]]:
        async def run() -> Result[Sequence[Result[Item, ErrInfo]], ErrInfo]:
            try:
                await asyncio.to_thread(sink.write, items)
            except OSError as exc:
                return Err(ErrInfo(ErrCode.TRANSIENT, f"cannot write {config.path}: {exc.strerror}"))
            return Ok([Ok(it) for it in items])

        return run

    def transform(upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        return ctx.map_batches(upstream, call)

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
