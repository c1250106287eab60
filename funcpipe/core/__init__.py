"""The pure algebra of funcpipe: results, items, plans, streams and structured concurrency.

Nothing here performs I/O or starts an event loop; see ``funcpipe.run``.
"""

from __future__ import annotations

from funcpipe.core._concurrency import async_gather, async_gen_gather, for_each_par, race, zip_par
from funcpipe.core._gen import (
    AsyncGen,
    async_gen_and_then,
    async_gen_empty,
    async_gen_filter,
    async_gen_from_iterable,
    async_gen_from_results,
    async_gen_map,
    async_gen_map_plan,
    async_gen_return,
    async_gen_using,
    collect,
    lift_async_item,
    partition,
)
from funcpipe.core._item import Item, canonical_json, stable_id
from funcpipe.core._plan import (
    AsyncPlan,
    async_bind,
    async_fail,
    async_from_result,
    async_lift,
    async_map,
    async_map_err,
    async_pure,
    user_error,
)
from funcpipe.core._result import Err, ErrCode, ErrInfo, Ok, Result, UnwrapError

__all__ = [
    "AsyncGen",
    "AsyncPlan",
    "Err",
    "ErrCode",
    "ErrInfo",
    "Item",
    "Ok",
    "Result",
    "UnwrapError",
    "async_bind",
    "async_fail",
    "async_from_result",
    "async_gather",
    "async_gen_and_then",
    "async_gen_empty",
    "async_gen_filter",
    "async_gen_from_iterable",
    "async_gen_from_results",
    "async_gen_gather",
    "async_gen_map",
    "async_gen_map_plan",
    "async_gen_return",
    "async_gen_using",
    "async_lift",
    "async_map",
    "async_map_err",
    "async_pure",
    "canonical_json",
    "collect",
    "for_each_par",
    "lift_async_item",
    "partition",
    "race",
    "stable_id",
    "user_error",
    "zip_par",
]
