"""Vector stages: ``embed``, ``vector.upsert`` and ``vector.query``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, cast

from funcpipe.core import (
    AsyncGen,
    AsyncPlan,
    Err,
    ErrCode,
    ErrInfo,
    Item,
    Ok,
    Result,
    async_gen_and_then,
    async_gen_from_iterable,
    async_gen_from_results,
    async_gen_return,
    stable_id,
)
from funcpipe.policy.batching import WHOLE_CALL
from funcpipe.ports import BulkLoadStore, EmbedPort, Fingerprint, VectorRecord, VectorStorePort
from funcpipe.stages.base import StageContext, Transform
from funcpipe.stages.config import EmbedConfig, UpsertConfig, VectorQueryConfig


def item_text(item: Item) -> str | None:
    """The text of an item: its data if a string, else ``data["text"]`` if that is one."""
    data = item.data
    if isinstance(data, str):
        return data
    if isinstance(data, dict) and isinstance(data.get("text"), str):
        return str(data["text"])
    return None


def _texts_only(stream: AsyncGen[Item], ctx: StageContext) -> AsyncGen[Item]:
    def check(item: Item) -> AsyncGen[Item]:
        if item_text(item) is None:
            return async_gen_from_results(
                [Err(ctx.fail(item, ErrInfo(ErrCode.BAD_INPUT, "item has no text to embed")))]
            )
        return async_gen_return(item)

    return async_gen_and_then(stream, check)


def estimate_tokens(text: str) -> int:
    """A cautious estimate of the tokens ``text`` costs an embedding API: a third of its UTF-8 bytes.

    BPE tokenizers (OpenAI's cl100k among them) average about four bytes of
    English or three of source code per token, so this rarely falls short of
    the real count; where it does (a request refused as too large), the
    batch is split like any batch the service refuses.
    """
    n = len(text) if text.isascii() else len(text.encode("utf-8"))
    return max(1, (n + 2) // 3)


def item_tokens(item: Item) -> int:
    """`estimate_tokens` of an item's text (1 for an item without text)."""
    return estimate_tokens(item_text(item) or "")


def _cost_fn(ctx: StageContext) -> Any:
    limit = ctx.policy.rate_limit
    if limit is None or limit.cost == 1:
        return None
    if limit.cost == "items":
        return len
    return lambda items: sum(item_tokens(i) for i in items)


def _chars(items: Sequence[Item]) -> int:
    """The characters of text a batch sends to the embedder."""
    return sum(len(item_text(i) or "") for i in items)


def embed(config: EmbedConfig, ctx: StageContext) -> Transform:
    """Embed each item's text; the output data is ``{"text", "embedding"}``.

    One batch is one request: up to the adapter's ``max_batch`` texts and,
    when the batch has ``max_tokens`` (the adapter's per-request limit unless
    the spec sets one), up to that many estimated tokens (`estimate_tokens`).
    """
    port = cast(EmbedPort, ctx.adapter)

    def call(items: Sequence[Item]) -> AsyncPlan[Sequence[Result[Item, ErrInfo]]]:
        texts = [item_text(i) or "" for i in items]
        inner = port.embed_batch(texts, config.purpose)

        async def run() -> Result[Sequence[Result[Item, ErrInfo]], ErrInfo]:
            res = await inner()
            if isinstance(res, Err):
                return res
            fp = str(port.fingerprint)
            out: list[Result[Item, ErrInfo]] = []
            for it, text, r in zip(items, texts, res.value, strict=True):
                if isinstance(r, Ok):
                    vector = r.value
                    # Adapters checked the values; a list is kept as it is, not copied again.
                    embedding = vector if type(vector) is list else [float(x) for x in vector]
                    data = {"text": text, "embedding": embedding}
                    out.append(Ok(it.evolve(data=data, meta={**it.meta, "embedder": fp})))
                else:
                    out.append(r)
            return Ok(out)

        return run

    def transform(upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        return ctx.map_batches(
            _texts_only(upstream, ctx),
            call,
            max_size=port.max_batch,
            cost=_cost_fn(ctx),
            chars=_chars,
            tokens=item_tokens,
        )

    return transform


def _record(item: Item, origin: str) -> VectorRecord | None:
    data = item.data
    if not isinstance(data, dict) or not isinstance(data.get("embedding"), list | tuple):
        return None
    meta = {k: v for k, v in item.meta.items() if k != "embedder"}
    return VectorRecord(item.id, item.source_id, str(data.get("text", "")), data["embedding"], meta, origin)


def upsert(config: UpsertConfig, ctx: StageContext) -> Transform:
    """Upsert embedded chunks; once all chunks of a source are in, delete its stale ones.

    The store is prepared (extension, table, index, fingerprint check) before
    the first write. Each row records its origin, from the runner's
    ``origin_of`` service (source id -> ``<pipeline>/<source stage>``). A
    batch the store refuses is split to find the records it refuses (see
    `funcpipe.policy.stream`), so one bad record fails alone.
    Stale deletion needs ``chunk_count`` in the chunks' meta (``text.chunk``
    sets it) and happens only when every chunk of that source was written, so
    a partly failed source keeps its old chunks; the sources completed by one
    batch are pruned in one call per origin. Deleting the rows of sources
    that are gone is the runner's end-of-run sync, not this stage's.
    """
    store = cast(VectorStorePort, ctx.adapter)
    embedder = ctx.embedder
    origin_of = ctx.origin_of
    state: dict[str, Any] = {"ready": ctx.prepared, "lock": None}
    committed: dict[str, set[str]] = {}

    async def ready(records: Sequence[VectorRecord]) -> Result[None, ErrInfo]:
        if state["ready"]:
            return Ok(None)
        if state["lock"] is None:
            state["lock"] = asyncio.Lock()
        async with state["lock"]:
            if state["ready"]:
                return Ok(None)
            fp = (
                embedder.fingerprint
                if embedder is not None
                else Fingerprint("unknown", "unknown", len(records[0].embedding))
            )
            res = await store.ensure(fp)()
            if isinstance(res, Ok):
                state["ready"] = True
            return res

    def call(items: Sequence[Item]) -> AsyncPlan[Sequence[Result[Item, ErrInfo]]]:
        async def run() -> Result[Sequence[Result[Item, ErrInfo]], ErrInfo]:
            records: list[VectorRecord] = []
            out: list[Result[Item, ErrInfo]] = []
            for it in items:
                rec = _record(it, origin_of(it.source_id))
                if rec is None:
                    out.append(
                        Err(
                            ctx.fail(
                                it,
                                ErrInfo(
                                    ErrCode.BAD_INPUT,
                                    "item has no embedding: put an embed stage before vector.upsert",
                                ),
                            )
                        )
                    )
                else:
                    records.append(rec)
                    out.append(Ok(it))
            if records:
                prep = await ready(records)
                if isinstance(prep, Err):
                    # A store that cannot be prepared refuses any items: splitting the batch cannot help.
                    return Err(prep.error.with_meta(**{WHOLE_CALL: True}))
                res = await store.upsert(records)()
                if isinstance(res, Err):
                    return res
                if config.deletes_stale:
                    written = [r.value for r in out if isinstance(r, Ok)]
                    stale = await _delete_stale(store, written, committed, origin_of)
                    if isinstance(stale, Err):
                        return Err(stale.error.with_meta(**{WHOLE_CALL: True}))
            return Ok(out)

        return run

    def transform(upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        return ctx.map_batches(upstream, call)

    return transform


def prepare_upsert(_config: UpsertConfig, ctx: StageContext) -> AsyncPlan[None] | None:
    """The store's ``ensure`` for the fingerprint of the embedder feeding it, before any source is read.

    A table filled by another embedder is then a run error up front, before a
    corpus is embedded (and paid for) only to be refused at the first write.
    Without a known embedder there is nothing to check yet: the first write
    prepares the store for the vectors it brings.
    """
    if ctx.embedder is None:
        return None
    return cast(VectorStorePort, ctx.adapter).ensure(ctx.embedder.fingerprint)


def finish_upsert(_config: UpsertConfig, ctx: StageContext) -> AsyncPlan[bool] | None:
    """The store's ``finish_load`` (its deferred vector index), once the stream has drained.

    None for a store that defers nothing.
    """
    store = ctx.adapter
    return store.finish_load() if isinstance(store, BulkLoadStore) else None


async def _delete_stale(
    store: VectorStorePort,
    items: Sequence[Item],
    committed: dict[str, set[str]],
    origin_of: Callable[[str], str],
) -> Result[None, ErrInfo]:
    """Prune the stale rows of every source this batch completed: one store call per origin."""
    added: list[Item] = []
    complete: dict[str, list[str]] = {}  # origin -> completed source ids
    for it in items:
        count = it.meta.get("chunk_count")
        if not isinstance(count, int):
            continue
        ids = committed.setdefault(it.source_id, set())
        if it.id not in ids:
            ids.add(it.id)
            added.append(it)
        if len(ids) >= count and it.source_id not in complete.get(origin_of(it.source_id), ()):
            complete.setdefault(origin_of(it.source_id), []).append(it.source_id)
    for origin, sources in complete.items():
        keep = sorted({cid for sid in sources for cid in committed[sid]})
        res = await store.prune(origin, sources, keep)()
        if isinstance(res, Err):
            # The batch is retried whole: forget what it added, so a retry sees it anew.
            for it in added:
                committed.get(it.source_id, set()).discard(it.id)
            return res
        for sid in sources:
            del committed[sid]
    return Ok(None)


def query(config: VectorQueryConfig, ctx: StageContext) -> Transform:
    """For each item's text, emit its ``top_k`` best chunks as items (best first), ranked by ``mode``."""
    store = cast(VectorStorePort, ctx.adapter)
    embedder = ctx.embedder
    if embedder is None:
        raise ValueError(f"stage {ctx.stage_id}: vector.query needs an embedder: set with.embedder")

    def search(item: Item) -> AsyncPlan[list[Item]]:
        text = item_text(item) or ""

        async def run() -> Result[list[Item], ErrInfo]:
            vector: Sequence[float] = ()
            if config.mode != "keyword":  # keyword ranking needs no vector: no embedding call
                vec = await embedder.embed_batch([text], "query")()
                if isinstance(vec, Err):
                    return vec
                first = vec.value[0]
                if isinstance(first, Err):
                    return first
                vector = first.value
            hits = await store.query(vector, config.top_k, config.filter, text=text, mode=config.mode)()
            if isinstance(hits, Err):
                return hits
            return Ok(
                [
                    Item(
                        stable_id({"query": item.id, "hit": h.id}),
                        {
                            "text": h.text,
                            "score": h.score,
                            "chunk_id": h.id,
                            "question": text,
                            "rank": rank,
                        },
                        dict(h.meta),
                        item.source_id,
                    )
                    for rank, h in enumerate(hits.value, start=1)
                ]
            )

        return run

    def transform(upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        # Each question's hits, in rank order, as items of their own.
        return async_gen_and_then(ctx.map(upstream, search), async_gen_from_iterable)

    return transform
