"""``map`` and ``filter``: user callables named by import path, sync or async."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, cast

from funcpipe.core import (
    AsyncGen,
    AsyncPlan,
    Err,
    ErrInfo,
    Item,
    Ok,
    Result,
    async_gen_filter,
    user_error,
)
from funcpipe.stages.base import StageContext, Transform
from funcpipe.stages.config import CallableConfig
from funcpipe.stages.imports import importable, resolve_import

_DROPPED = object()


def _load(config: CallableConfig, ctx: StageContext) -> Callable[..., Any]:
    # User callables live beside the spec, as the loader found them.
    with importable(ctx.base_dir):
        fn = resolve_import(config.fn)
    if not callable(fn):
        raise TypeError(f"{config.fn} is not callable")
    return fn  # type: ignore[no-any-return]


def _call_plan(fn: Callable[..., Any], item: Item, kwargs: dict[str, object]) -> AsyncPlan[object]:
    is_async = inspect.iscoroutinefunction(fn)

    async def run() -> Result[object, ErrInfo]:
        try:
            out = fn(item, **kwargs)
            if is_async or inspect.isawaitable(out):
                out = await out
            return Ok(out)
        except Exception as exc:
            return Err(user_error(exc))

    return run


def map_stage(config: CallableConfig, ctx: StageContext) -> Transform:
    """Replace each item's data by ``fn(item)``.

    ``fn`` may return data, a whole `Item`, or None to drop the item (reported
    as filtered). An exception becomes a ``USER_CODE`` error with its traceback.
    """
    fn = _load(config, ctx)
    kwargs = dict(config.kwargs)

    def plan(item: Item) -> AsyncPlan[object]:
        inner = _call_plan(fn, item, kwargs)

        async def run() -> Result[object, ErrInfo]:
            res = await inner()
            if isinstance(res, Err):
                return res
            out = res.value
            if out is None:
                ctx.filtered(item, f"{config.fn} returned None")
                return Ok(_DROPPED)
            return Ok(out if isinstance(out, Item) else item.evolve(data=out))

        return run

    def transform(upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        return _drop_marked(ctx.map(upstream, plan))

    return transform


def filter_stage(config: CallableConfig, ctx: StageContext) -> Transform:
    """Keep the items for which ``fn(item)`` is truthy; drops are reported as filtered."""
    fn = _load(config, ctx)
    kwargs = dict(config.kwargs)

    def plan(item: Item) -> AsyncPlan[object]:
        inner = _call_plan(fn, item, kwargs)

        async def run() -> Result[object, ErrInfo]:
            res = await inner()
            if isinstance(res, Err):
                return res
            if res.value:
                return Ok(item)
            ctx.filtered(item, f"{config.fn} returned {res.value!r}")
            return Ok(_DROPPED)

        return run

    def transform(upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        return _drop_marked(ctx.map(upstream, plan))

    return transform


def _drop_marked(gen: AsyncGen[object]) -> AsyncGen[Item]:
    return cast("AsyncGen[Item]", async_gen_filter(gen, _not_dropped))


def _not_dropped(value: object) -> bool:
    return value is not _DROPPED
