"""The compiler: a validated spec becomes a `CompiledPipeline`, a pure description.

Compiling is the single resolver. The loader has already checked the spec
and resolved each kind, input and policy once (with located errors); the
compiler takes those and works out the rest once: the topological graph,
what each stage kind declared it needs (the embedder behind a store, the
origin of its rows, its default batch), the query's adapters and policies,
the resume keys, origins and syncs, where the run's secrets are, and the
run's settings (state and base directories, fingerprint, ``on_error``,
shutdown timeout). The result carries all of it as data and no reference to
the spec. It opens no client, reads no file, starts no task and imports no
stage factory: the runner binds the description to resources when it runs it.
"""

from __future__ import annotations

from dataclasses import replace

from funcpipe.adapters.config import AdapterConfig
from funcpipe.adapters.pricing import known_price
from funcpipe.compile._graph import CompiledAdapter, CompiledPipeline, CompiledQuery, CompiledStage, StoreSync
from funcpipe.compile._labels import NodeLabel, budget_summary, node_label, policy_summary
from funcpipe.compile._resume import resume_key
from funcpipe.compile._secrets import SecretSources, secret_sources
from funcpipe.errors import SpecError
from funcpipe.policy.budget import DEFAULT_CHARS_PER_TOKEN
from funcpipe.policy.models import NO_POLICY
from funcpipe.ports import VectorStorePort
from funcpipe.registry import AdapterKind
from funcpipe.spec.loaded import LoadedSpec


def compile_pipeline(loaded: LoadedSpec) -> CompiledPipeline:
    """Turn a validated spec into a `CompiledPipeline`. Performs no I/O.

    Raises:
        SpecError: if the stages form a cycle (the loader normally reports it first, located).
    """
    spec = loaded.spec
    if len(loaded.order) != len(spec.stages):
        raise SpecError("stages form a cycle or an unknown input", file=str(loaded.path), path="stages")
    adapters = {name: _adapter(name, loaded.adapter_kinds[name], cfg) for name, cfg in loaded.adapters.items()}
    consumers: dict[str, list[str]] = {sid: [] for sid in loaded.order}
    for sid in loaded.order:
        for dep in loaded.inputs.get(sid, ()):
            consumers[dep].append(sid)
    by_id = {s.id: s for s in spec.stages}
    index = {s.id: i for i, s in enumerate(spec.stages)}
    bare = tuple(
        CompiledStage(
            id=sid,
            kind=loaded.stage_kinds[sid],
            config=loaded.stage_configs[sid],
            adapter=by_id[sid].adapter,
            policy=loaded.policy_of(sid),
            batch=by_id[sid].batch,
            inputs=tuple(loaded.inputs.get(sid, ())),
            consumers=tuple(consumers[sid]),
            index=index[sid],
            # A store's calls are database round trips, not what a run's budget is about.
            run_budget=by_id[sid].adapter is not None and loaded.stage_kinds[sid].needs is not VectorStorePort,
        )
        for sid in loaded.order
    )
    graph = CompiledPipeline(name=spec.name, stages=bare, adapters=adapters)
    origins = {s.id: f"{spec.name}/{s.id}" for s in graph.sources}
    stages = tuple(_resolve_stage(graph, st, origins) for st in bare)
    graph = CompiledPipeline(name=spec.name, stages=stages, adapters=adapters)
    syncs = tuple(
        StoreSync(st.id, st.adapter, mode, graph.upstream_sources(st.id))
        for st in stages
        if st.adapter is not None and (mode := st.kind.sync_mode(st.config)) is not None
    )
    dead_letter = spec.on_error.dead_letter
    return CompiledPipeline(
        name=spec.name,
        stages=stages,
        adapters=adapters,
        resume_keys={s.id: resume_key(graph, s.id) for s in graph.sources},
        origins=origins,
        syncs=syncs,
        path=loaded.path,
        base_dir=loaded.base_dir,
        state_dir=loaded.state_dir,
        fingerprint=loaded.fingerprint,
        text=loaded.text,
        description=spec.description,
        fail_fast=spec.on_error.mode == "fail_fast",
        dead_letter=loaded.base_dir / dead_letter if dead_letter else None,
        shutdown_timeout=spec.shutdown_timeout,
        executor=spec.executor,
        query=_query(loaded, graph),
        budget=spec.budget,
        secrets=secret_sources(
            [
                spec.model_dump(by_alias=True),
                *(a.config for a in adapters.values()),
                *(s.config for s in stages),
            ]
        ),
    )


def _adapter(name: str, kind: AdapterKind, config: AdapterConfig) -> CompiledAdapter:
    """The adapter with its price (its own, else the shipped table's) and its characters-per-token ratio."""
    model = getattr(config, "model", None)
    price = config.price or known_price(kind.name, model if isinstance(model, str) else None)
    ratio = config.chars_per_token or DEFAULT_CHARS_PER_TOKEN
    return CompiledAdapter(name, kind, config, price=price, chars_per_token=ratio)


def _resolve_stage(graph: CompiledPipeline, st: CompiledStage, origins: dict[str, str]) -> CompiledStage:
    """``st`` with the services its kind declared resolved: its embedder, default origin and request limits."""
    embedder = st.kind.named_embedder(st.config)
    if embedder is None:
        feeding = graph.nearest_upstream(st.id, lambda s: s.kind.embeds and s.adapter is not None)
        embedder = feeding.adapter if feeding is not None else None
    sources = graph.upstream_sources(st.id)
    origin = origins[sources[0]] if len(sources) == 1 else ""
    limits = None
    if st.kind.fill_requests and st.adapter is not None and st.adapter in graph.adapters:
        limits = graph.adapters[st.adapter].config.request_limits
    return replace(st, embedder=embedder, origin=origin, limits=limits)


def _query(loaded: LoadedSpec, graph: CompiledPipeline) -> CompiledQuery | None:
    q = loaded.spec.query
    if q is None:
        return None
    embed_stage = next((s for s in graph.stages if s.kind.embeds), None)
    store_stage = next((s for s in graph.stages if s.kind.stores_vectors), None)
    embedder = q.embedder or (embed_stage.adapter if embed_stage else None)
    store = q.store or (store_stage.adapter if store_stage else None)
    embed_policy = embed_stage.policy if embed_stage and embed_stage.adapter == embedder else NO_POLICY
    return CompiledQuery(
        generator=q.adapter,
        embedder=embedder,
        store=store,
        top_k=q.top_k,
        prompt=q.prompt,
        filter=q.filter,
        mode=q.mode,
        embed_policy=embed_policy,
        policy=loaded.query_policy,
        params=loaded.spec.params,
    )


# What the runner, the renderer, the root API and tools use. How resume keys
# are made (`funcpipe.compile._resume`) is the compiler's own business: a
# compiled pipeline carries the keys themselves (`CompiledPipeline.resume_keys`).
__all__ = [
    "CompiledAdapter",
    "CompiledPipeline",
    "CompiledQuery",
    "CompiledStage",
    "NodeLabel",
    "SecretSources",
    "StoreSync",
    "budget_summary",
    "compile_pipeline",
    "node_label",
    "policy_summary",
    "secret_sources",
]
