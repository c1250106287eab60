"""The ``example.shout`` stage: a pure stream transformer."""

from __future__ import annotations

from collections.abc import AsyncIterator

from funcpipe.core import AsyncGen, Err, ErrCode, ErrInfo, Item, Ok, Result
from funcpipe.stages.base import StageContext, Transform
from funcpipe_example import ShoutConfig


def shout(config: ShoutConfig, ctx: StageContext) -> Transform:
    """Upper-case each item's text; an item without text fails as BAD_INPUT."""

    def transform(upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            async for r in upstream():
                if isinstance(r, Err):
                    yield r  # failures upstream flow on untouched
                    continue
                item = r.value
                text = item.data if isinstance(item.data, str) else None
                if text is None:
                    yield Err(ctx.fail(item, ErrInfo(ErrCode.BAD_INPUT, "example.shout needs text")))
                    continue
                yield Ok(item.evolve(data=text.upper() + config.suffix))

        return run

    return transform
