"""Answering a question from a spec's own adapters (``funcpipe query``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from funcpipe.compile import CompiledPipeline, CompiledQuery
from funcpipe.core import Err, ErrCode, ErrInfo, Ok
from funcpipe.errors import RunError, SpecError
from funcpipe.policy.apply import PolicyRuntime
from funcpipe.ports import (
    Embedding,
    EmbedPort,
    Fingerprint,
    GeneratePort,
    Generation,
    QueryHit,
    RetrievalMode,
    VectorStorePort,
)
from funcpipe.run.preflight import missing_credentials
from funcpipe.run.runner import RunOptions
from funcpipe.run.wiring import LazyAdapters

RETRIEVAL_MODES: tuple[str, ...] = get_args(RetrievalMode)
"""The retrieval modes a query may ask for."""

WEAK_COSINE: Mapping[str, float] = {"wordllama": 0.32, "hashing": 0.25}
"""Per embedder kind, the cosine similarity below which the best vector hit is weak.

Measured by bench/retrieval.py: with ``wordllama`` the best hit of every
answered question scored at least 0.38, of every off-topic one at most
0.27; with ``hashing``, 0.23 and 0.25 (the two overlap). Other embedders'
scales differ and are not measured: their similarity is not judged."""

WEAK_COVERAGE = 0.3
"""The share of the question's search terms below which the best keyword hit is weak.

Measured by bench/retrieval.py: one answered question in 54 had less (0.29),
six off-topic questions in 8."""


def term_coverage(question: str, text: str) -> float:
    """The share of the question's distinct search terms that ``text`` holds (0 when it has none)."""
    from funcpipe.adapters._retrieval import keyword_terms

    wanted = set(keyword_terms(question))
    if not wanted:
        return 0.0
    return len(wanted & set(keyword_terms(text))) / len(wanted)


def weak_match(question: str, hits: Sequence[QueryHit], mode: str, embedder: str | None = None) -> str | None:
    """Why the best of ``hits`` is too weak to be an answer, or None when it is a match.

    ``vector``: the best cosine similarity is below the embedder kind's
    `WEAK_COSINE` (never for a kind not measured). ``keyword``: no hit holds
    `WEAK_COVERAGE` of the question's terms. ``hybrid``: both (for a kind
    not measured, the keyword test alone).
    """
    if not hits:
        return "nothing matched the question"
    floor = WEAK_COSINE.get(embedder or "")
    cosine = max((h.scores["vector"] for h in hits if "vector" in h.scores), default=None)
    coverage = max(term_coverage(question, h.text) for h in hits)
    similar = f"the best similarity is {cosine:.2f}" if cosine is not None else "no passage is similar"
    words = f"the best passage holds {coverage:.0%} of the question's terms"
    weak_vector = floor is None or cosine is None or cosine < floor
    weak_keyword = coverage < WEAK_COVERAGE
    if mode == "vector" and floor is not None and weak_vector:
        return f"{similar} (below {floor:.2f})"
    if mode == "keyword" and weak_keyword:
        return f"{words} (below {WEAK_COVERAGE:.0%})"
    if mode == "hybrid" and weak_vector and weak_keyword:
        return f"{similar} and {words}" if floor is not None else words
    return None


@dataclass
class Answer:
    """A question's answer, the passages it came from, and token usage.

    ``weak`` says why the best passage is a weak match for the question
    (None when it is a good one): the answer may be noise, and `funcpipe
    query` says so.
    """

    question: str
    text: str
    hits: list[QueryHit]
    usage: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    mode: str = "vector"
    weak: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "question": self.question,
            "answer": self.text,
            "mode": self.mode,
            "weak_match": self.weak,
            "sources": [
                {
                    "id": h.id,
                    "source_id": h.source_id,
                    "score": round(h.score, 6),
                    "scores": {k: round(v, 6) for k, v in h.scores.items()},
                    "text": h.text,
                    "meta": dict(h.meta),
                }
                for h in self.hits
            ],
            "usage": self.usage,
        }


def render_prompt(template: str, variables: dict[str, Any]) -> str:
    """Render a prompt template in the Jinja2 sandbox (undefined names are errors)."""
    from funcpipe.spec.templating import render_template

    return render_template(template, variables)


def _query_of(pipeline: CompiledPipeline) -> tuple[CompiledQuery, str, str]:
    """The compiled query, its embedder and its store; a located error if the spec cannot answer."""
    q = pipeline.query
    if q is None:
        raise SpecError(
            f"pipeline {pipeline.name!r} has no query: section",
            file=str(pipeline.path),
            hint="add `query: {adapter: <generation adapter>, top_k: 5}` to the spec",
        )
    if not q.embedder or not q.store:
        raise SpecError(
            "query: cannot tell which embedder and store to use",
            file=str(pipeline.path),
            path="query",
            hint="set query.embedder and query.store, or have an embed and a vector.upsert stage",
        )
    return q, q.embedder, q.store


def _describe(fp: Fingerprint) -> str:
    return f"{fp} (kind {fp.kind}, model {fp.model}, dimension {fp.dim})"


async def _check_fingerprint(
    pipeline: CompiledPipeline, store: VectorStorePort, store_name: str, embedder: EmbedPort, embedder_name: str
) -> None:
    """Refuse to query a store that holds nothing, or vectors of another embedder than the spec's.

    Ingest checks the same before writing (``ensure``); a query that skipped
    it would compare vectors of two embedders: an error for another
    dimension, and silently wrong neighbours for the same one.
    """
    spec = pipeline.path
    table = getattr(store, "name", store_name)
    res = await store.stored_fingerprint()()
    if isinstance(res, Err):
        raise RunError(f"querying {store_name} failed: {res.error.code}: {res.error.msg}")
    exists, stored = res.value
    if not exists:
        raise RunError(
            f"nothing ingested yet: store {store_name!r} has no table {table}; run `funcpipe run {spec}` first"
        )
    wanted = embedder.fingerprint
    if stored is None:
        raise RunError(
            f"table {table} (store {store_name!r}) records no embedder fingerprint, so its vectors cannot be "
            f"checked against the spec's embedder {embedder_name!r}, {_describe(wanted)}: funcpipe did not "
            f"create it. Fix: point adapters.{store_name}.table at another table and run `funcpipe run {spec}`"
        )
    if stored != wanted:
        raise RunError(
            f"table {table} (store {store_name!r}) holds vectors from embedder {_describe(stored)}, but the "
            f"spec's embedder {embedder_name!r} is {_describe(wanted)}; vectors of different embedders cannot "
            f"be compared. Fix: query with the embedder the table was written with, or re-ingest with this "
            f"one: point adapters.{store_name}.table at another table and run `funcpipe run {spec}` "
            f"(or drop table {table} and run `funcpipe run {spec} --fresh`)"
        )


def _cannot_rank(error: ErrInfo, mode: str) -> bool:
    """Whether ``error`` is a store saying it cannot rank by ``mode`` (see `VectorStorePort.query`)."""
    return error.code == ErrCode.SERVICE_SPECIFIC and error.meta.get("mode") == mode


def check_mode(mode: str | None) -> RetrievalMode | None:
    """``mode`` if it names a retrieval mode (or is None).

    Raises:
        ValueError: naming the modes, and the nearest one.
    """
    if mode is None or mode in RETRIEVAL_MODES:
        return mode  # type: ignore[return-value]
    from funcpipe.registry import unknown_name

    raise ValueError(unknown_name("retrieval mode", mode, RETRIEVAL_MODES))


async def answer_question(
    pipeline: CompiledPipeline,
    question: str,
    *,
    top_k: int | None = None,
    mode: RetrievalMode | None = None,
    options: RunOptions | None = None,
) -> Answer:
    """Retrieve the chunks that best match ``question`` (by ``mode``, default the spec's) and answer from them.

    The answer says when even the best chunk is a weak match (`weak_match`).

    Raises:
        ValueError: ``mode`` is not a retrieval mode.
        RunError: when a service call fails (the message names the code),
            when nothing was ingested yet, or when the store holds vectors
            of another embedder than the spec's (both fingerprints named).
    """
    opts = options or RunOptions()
    q, embedder_name, store_name = _query_of(pipeline)
    how: RetrievalMode = check_mode(mode) or q.mode
    gen_name = q.generator
    state_dir = opts.state_dir or pipeline.state_dir
    async with opts.open_resources(state_dir) as resources:
        missing = missing_credentials(pipeline, (embedder_name, store_name, gen_name), resources)
        if missing is not None:
            raise RunError(missing)
        adapters = LazyAdapters(pipeline, resources, made=opts.adapters)
        embedder: EmbedPort = adapters[embedder_name]
        store: VectorStorePort = adapters[store_name]
        generator: GeneratePort = adapters[gen_name]
        await _check_fingerprint(pipeline, store, store_name, embedder, embedder_name)
        rt_embed = PolicyRuntime(q.embed_policy, clock=opts.clock, stage="query.embed", seed=opts.seed)
        rt_gen = PolicyRuntime(q.policy, clock=opts.clock, stage="query.generate", seed=opts.seed)

        async def embedded() -> Embedding:
            vec = await rt_embed.apply(embedder.embed_batch([question], "query"))()
            if isinstance(vec, Err):
                raise RunError(f"embedding the question failed: {vec.error.code}: {vec.error.msg}")
            first = vec.value[0]
            if isinstance(first, Err):
                raise RunError(f"embedding the question failed: {first.error.code}: {first.error.msg}")
            return first.value

        # Keyword ranking needs no vector: no embedding call.
        vector: Embedding = () if how == "keyword" else await embedded()
        found = await store.query(vector, top_k or q.top_k, q.filter, text=question, mode=how)()
        if isinstance(found, Err) and mode is None and how != "vector" and _cannot_rank(found.error, how):
            # The spec's mode, on a store switched in by one line that cannot rank by it:
            # answer by vector and say so, rather than refuse. An explicit mode is refused.
            opts.notify(
                f"note: store {store_name!r} cannot rank by {how}; answering by vector "
                f"(set query.mode: vector in the spec to silence this)"
            )
            how = "vector"
            vector = vector or await embedded()
            found = await store.query(vector, top_k or q.top_k, q.filter, text=question, mode=how)()
        if isinstance(found, Err):
            raise RunError(f"querying {store_name} failed: {found.error.code}: {found.error.msg}")
        hits = found.value
        chunks = [
            {"id": h.id, "source_id": h.source_id, "text": h.text, "score": h.score, "meta": dict(h.meta)} for h in hits
        ]
        variables = {"question": question, "chunks": chunks, "params": q.params}
        prompt = render_prompt(q.prompt, variables)
        gen = await rt_gen.apply(generator.generate(prompt, question=question, hits=hits))()
        if isinstance(gen, Err):
            raise RunError(f"generation with {gen_name} failed: {gen.error.code}: {gen.error.msg}")
        assert isinstance(gen, Ok)
        g: Generation = gen.value
        weak = weak_match(question, hits, how, embedder.fingerprint.kind)
        return Answer(question, g.text, list(hits), dict(g.usage), dict(g.meta), how, weak)
