"""Stage kinds for runner tests: deterministic sources, 1->N, N->1, failures and drops.

Each is a `StageKind` object, so a spec names it by import path
(``use: tests.run.fake_stages:FAN``). `outcome` is a pure reference model of
what the runner must report for one source item.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import Field

from funcpipe.core import AsyncGen, Err, ErrCode, ErrInfo, Item, Ok, Result, stable_id
from funcpipe.registry import StageKind
from funcpipe.stages.base import StageContext, Transform
from funcpipe.stages.config import StageConfig


class SourceConfig(StageConfig):
    count: int = Field(..., ge=0)
    prefix: str = "s"


class FanConfig(StageConfig):
    """Each item becomes ``int(id, 16) % (most + 1)`` items (possibly none)."""

    most: int = 3


class FailConfig(StageConfig):
    """Items whose id hashes to ``salt`` modulo ``every`` fail."""

    every: int = Field(5, ge=1)
    salt: int = 0


class DropConfig(StageConfig):
    every: int = Field(7, ge=1)
    salt: int = 1


def _h(item_id: str, salt: int, m: int) -> int:
    return int(stable_id({"id": item_id, "salt": salt})[:8], 16) % m


def source_ids(count: int, prefix: str = "s") -> list[str]:
    return [stable_id({"prefix": prefix, "n": i}) for i in range(count)]


def _source(config: SourceConfig, ctx: StageContext) -> Transform:
    def transform(_up: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            for i, sid in enumerate(source_ids(config.count, config.prefix)):
                yield Ok(Item(sid, f"{config.prefix}{i}", {"n": i}, sid))

        return run

    return transform


def fan_count(item_id: str, most: int) -> int:
    return int(item_id[:8], 16) % (most + 1)


def fan_children(item: Item, most: int) -> list[Item]:
    return [
        Item(stable_id({"parent": item.id, "k": k}), f"{item.data}.{k}", dict(item.meta), item.source_id)
        for k in range(fan_count(item.id, most))
    ]


def _fan(config: FanConfig, ctx: StageContext) -> Transform:
    def transform(up: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            async for r in up():
                if isinstance(r, Err):
                    yield r
                    continue
                kids = fan_children(r.value, config.most)
                if not kids:
                    ctx.filtered(r.value, "no children")
                for kid in kids:
                    yield Ok(kid)

        return run

    return transform


def _regroup(config: StageConfig, ctx: StageContext) -> Transform:
    """N -> 1: consecutive items of one source become one item."""

    def transform(up: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            group: list[Item] = []
            async for r in up():
                if isinstance(r, Err):
                    yield r
                    continue
                if group and group[0].source_id != r.value.source_id:
                    yield Ok(_merge(group))
                    group = []
                group.append(r.value)
            if group:
                yield Ok(_merge(group))

        return run

    return transform


def _merge(group: list[Item]) -> Item:
    return Item(stable_id({"group": [i.id for i in group]}), [i.data for i in group], {}, group[0].source_id)


def fails(item_id: str, config: FailConfig) -> bool:
    return _h(item_id, config.salt, config.every) == 0


def _fail(config: FailConfig, ctx: StageContext) -> Transform:
    def transform(up: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            async for r in up():
                if isinstance(r, Ok) and fails(r.value.id, config):
                    yield Err(ctx.fail(r.value, ErrInfo(ErrCode.BAD_INPUT, f"injected failure of {r.value.id[:8]}")))
                else:
                    yield r

        return run

    return transform


def drops(item_id: str, config: DropConfig) -> bool:
    return _h(item_id, config.salt, config.every) == 0


def _drop(config: DropConfig, ctx: StageContext) -> Transform:
    def transform(up: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            async for r in up():
                if isinstance(r, Ok) and drops(r.value.id, config):
                    ctx.filtered(r.value, "dropped")
                    continue
                yield r

        return run

    return transform


SOURCE = StageKind("test.source", SourceConfig, _source, "source")
FAN = StageKind("test.fan", FanConfig, _fan)
REGROUP = StageKind("test.regroup", StageConfig, _regroup)
FAIL = StageKind("test.fail", FailConfig, _fail)
DROP = StageKind("test.drop", DropConfig, _drop)


def outcome(source: Item, stages: list[tuple[str, StageConfig]]) -> str:
    """The reference model: the outcome the runner must report for ``source``."""
    items = [source]
    failed = filtered = False
    for kind, cfg in stages:
        nxt: list[Item] = []
        if kind == "fan":
            assert isinstance(cfg, FanConfig)
            for it in items:
                kids = fan_children(it, cfg.most)
                filtered |= not kids
                nxt.extend(kids)
        elif kind == "regroup":
            nxt = [_merge(items)] if items else []
        elif kind == "fail":
            assert isinstance(cfg, FailConfig)
            for it in items:
                if fails(it.id, cfg):
                    failed = True
                else:
                    nxt.append(it)
        elif kind == "drop":
            assert isinstance(cfg, DropConfig)
            for it in items:
                if drops(it.id, cfg):
                    filtered = True
                else:
                    nxt.append(it)
        items = nxt
    if failed:
        return "failed"
    return "done" if items else "filtered"
