"""The compiler: a validated spec becomes a `CompiledPipeline`, a pure description.

Compiling resolves every kind against the registry and orders the graph. It
opens no client, reads no file, starts no task and imports no stage factory:
the runner binds the description to resources when it runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from funcpipe.adapters.config import AdapterConfig
from funcpipe.core import stable_id
from funcpipe.errors import SpecError, SpecErrors
from funcpipe.policy.models import Batch, Policy
from funcpipe.ports import VectorStorePort
from funcpipe.registry import REGISTRY, AdapterKind, Registry, StageKind
from funcpipe.spec.loaded import LoadedSpec
from funcpipe.stages.config import StageConfig


@dataclass(frozen=True)
class CompiledAdapter:
    """An adapter of the pipeline: its kind and validated config."""

    name: str
    kind: AdapterKind
    config: AdapterConfig

    @property
    def model(self) -> str | None:
        """The provider's model, where the config has one."""
        model = getattr(self.config, "model", None)
        return model if isinstance(model, str) else None


@dataclass(frozen=True)
class CompiledStage:
    """One node of the graph.

    Attributes:
        id: stage id.
        kind: the registered stage kind.
        config: its validated ``with:`` block.
        adapter: the adapter name, if any.
        policy: the resolved policy.
        batch: batching, if any.
        inputs: ids of the stages it reads (empty for sources).
        consumers: ids of the stages that read it (empty for terminal stages).
    """

    id: str
    kind: StageKind
    config: StageConfig
    adapter: str | None
    policy: Policy
    batch: Batch | None
    inputs: tuple[str, ...]
    consumers: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreSync:
    """How one store stage mirrors its sources.

    Attributes:
        stage: the store stage's id.
        adapter: its store adapter's name.
        mode: ``mirror`` (rows of sources gone from a complete listing are
            deleted at the end of the run) or ``append`` (never).
        sources: ids of the source stages feeding it; each one's rows carry
            the origin `CompiledPipeline.origins` gives it.
    """

    stage: str
    adapter: str
    mode: Literal["mirror", "append"]
    sources: tuple[str, ...]


@dataclass(frozen=True)
class CompiledPipeline:
    """The whole pure description: stages in topological order, and the adapters.

    Attributes:
        name: the pipeline's name.
        loaded: the validated spec it came from.
        stages: the stages, in topological order.
        adapters: the adapters, by name.
        resume_keys: per source stage, the key under which the ledger records
            its settled items (see `resume_key`): an item is skipped when its
            content and this key are unchanged.
        origins: per source stage, the origin its rows carry in stores
            (``<pipeline>/<source stage>``).
        syncs: the store stages and how each mirrors its sources.
    """

    name: str
    loaded: LoadedSpec
    stages: tuple[CompiledStage, ...]
    adapters: Mapping[str, CompiledAdapter] = field(default_factory=dict)
    resume_keys: Mapping[str, str] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)
    syncs: tuple[StoreSync, ...] = ()

    def stage(self, stage_id: str) -> CompiledStage:
        """The stage with this id."""
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise KeyError(stage_id)

    @property
    def sources(self) -> tuple[CompiledStage, ...]:
        """Stages with no input."""
        return tuple(s for s in self.stages if not s.inputs)

    @property
    def terminals(self) -> tuple[CompiledStage, ...]:
        """Stages nobody reads: what leaves them is done."""
        return tuple(s for s in self.stages if not s.consumers)

    @property
    def order_preserving(self) -> bool:
        """True when items leave every terminal in the order their sources entered.

        That holds for a graph without fan-in, whose stages keep order (no
        fairness reordering); the runner then settles source items as soon as
        later ones come out, keeping its accounting memory bounded.
        """
        return len(self.sources) == 1 and all(len(s.inputs) <= 1 and s.policy.fairness is None for s in self.stages)

    def upstream(self, stage_id: str, use: str) -> CompiledStage | None:
        """The nearest stage of kind ``use`` feeding ``stage_id`` (breadth first)."""
        seen: set[str] = set()
        frontier = list(self.stage(stage_id).inputs)
        while frontier:
            nxt: list[str] = []
            for sid in frontier:
                if sid in seen:
                    continue
                seen.add(sid)
                st = self.stage(sid)
                if st.kind.name == use:
                    return st
                nxt.extend(st.inputs)
            frontier = nxt
        return None

    def first_of(self, use: str) -> CompiledStage | None:
        """The first stage of kind ``use``, in order."""
        return next((s for s in self.stages if s.kind.name == use), None)

    def downstream(self, stage_id: str) -> tuple[CompiledStage, ...]:
        """``stage_id`` and every stage it feeds, directly or not, in topological order."""
        reach = {stage_id}
        for st in self.stages:
            if any(i in reach for i in st.inputs):
                reach.add(st.id)
        return tuple(s for s in self.stages if s.id in reach)

    def upstream_sources(self, stage_id: str) -> tuple[str, ...]:
        """The ids of the source stages that feed ``stage_id`` (itself, if it is one), in order."""
        return tuple(s.id for s in self.sources if any(d.id == stage_id for d in self.downstream(s.id)))


# -- the resume key -------------------------------------------------------------

RESUME_KEY_VERSION = 2

ADAPTER_RESUME_IGNORES = frozenset(
    {
        # where and how a service is reached
        "base_url",
        "api_key_env",
        "headers",
        "request_timeout",
        "pool_max",
        "keep_alive",
        # request shapes that give the same vectors
        "max_batch",
        "encoding_format",
        # how a store is queried, not what it holds
        "index",
        "exact",
        "distance",
        # generation only
        "max_tokens",
        "max_tokens_param",
        "temperature",
        "anthropic_version",
        "max_passages",
        "max_chars",
    }
)
"""Adapter fields that never shape what a pipeline writes; an adapter config class
may name its own with a ``resume_ignores`` class attribute."""


def database_identity(dsn: str | None) -> dict[str, object]:
    """Which database a DSN reaches, for the resume key: host, port and name; never a user or password.

    No DSN is the embedded server beside the spec. The same database reached
    under two names (``localhost`` and ``127.0.0.1``) counts as two targets:
    a change of name redoes the work, it never wrongly skips it.
    """
    if dsn is None:
        return {"embedded": True}
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or ["localhost"])[0]
    try:
        port = parts.port or int((query.get("port") or ["5432"])[0])
    except ValueError:
        port = 5432
    dbname = unquote(parts.path.lstrip("/")) or (query.get("dbname") or [parts.username or ""])[0]
    return {"host": host, "port": port, "dbname": dbname}


def adapter_identity(config: AdapterConfig) -> dict[str, object]:
    """The adapter settings that shape what it produces or where it writes (resume key material)."""
    ignores: frozenset[str] = getattr(type(config), "resume_ignores", ADAPTER_RESUME_IGNORES)
    values = config.model_dump(mode="json", by_alias=True)
    dsn = values.pop("dsn", None) if "dsn" in values else None
    identity = {k: v for k, v in values.items() if k not in ignores}
    if "dsn" in type(config).model_fields:
        identity["database"] = database_identity(dsn if isinstance(dsn, str) else None)
    return identity


def stage_identity(stage: CompiledStage) -> dict[str, object]:
    """A stage's kind and the ``with:`` settings that shape its output (resume key material)."""
    ignores: frozenset[str] = getattr(type(stage.config), "resume_ignores", frozenset())
    settings = stage.config.model_dump(mode="json", by_alias=True)
    return {"kind": stage.kind.name, "with": {k: v for k, v in settings.items() if k not in ignores}}


def resume_key(pipeline: CompiledPipeline, source: str) -> str:
    """The resume key of the items of source stage ``source``: what defines their outputs.

    It hashes the pipeline's name and the source stage's id (they name the
    rows' origin), then every stage downstream of the source in order: its
    kind (a user function's import path included), its ``with:`` settings
    but those it declares as not shaping output, its adapter's identity (see
    `adapter_identity`), and which of those stages it reads. Policies,
    batching, ``on_error``, other sources' stages, comments and formatting
    are not part of it.
    """
    stages = pipeline.downstream(source)
    index = {s.id: i for i, s in enumerate(stages)}
    material = []
    for st in stages:
        entry = stage_identity(st)
        entry["inputs"] = sorted(index[i] for i in st.inputs if i in index)
        if st.adapter is not None and st.adapter in pipeline.adapters:
            entry["adapter"] = adapter_identity(pipeline.adapters[st.adapter].config)
        material.append(entry)
    return stable_id({"resume": RESUME_KEY_VERSION, "pipeline": pipeline.name, "source": source, "stages": material})


def _topological(ids: list[str], inputs: Mapping[str, tuple[str, ...]]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(sid: str, trail: list[str]) -> None:
        if state.get(sid) == 2:
            return
        if state.get(sid) == 1:
            cycle = [*trail[trail.index(sid) :], sid]
            raise SpecError(f"stages form a cycle: {' -> '.join(cycle)}", path="stages")
        state[sid] = 1
        for dep in inputs.get(sid, ()):
            visit(dep, [*trail, sid])
        state[sid] = 2
        order.append(sid)

    for sid in ids:
        visit(sid, [])
    return order


def compile_pipeline(loaded: LoadedSpec, registry: Registry = REGISTRY) -> CompiledPipeline:
    """Turn a validated spec into a `CompiledPipeline`. Performs no I/O.

    Raises:
        SpecErrors: if a kind is unknown (the loader normally catches this first).
    """
    spec = loaded.spec
    errors: list[SpecError] = []
    adapters: dict[str, CompiledAdapter] = {}
    for name, cfg in loaded.adapters.items():
        try:
            adapters[name] = CompiledAdapter(name, registry.adapter(cfg.kind), cfg)
        except LookupError as exc:
            errors.append(SpecError(str(exc), file=str(loaded.path), path=f"adapters.{name}.kind"))
    kinds: dict[str, StageKind] = {}
    for i, st in enumerate(spec.stages):
        try:
            kinds[st.id] = registry.stage(st.use)
        except (LookupError, ImportError) as exc:
            errors.append(SpecError(str(exc), file=str(loaded.path), path=f"stages[{i}].use"))
    if errors:
        raise SpecErrors(errors)

    ids = [s.id for s in spec.stages]
    order = _topological(ids, loaded.inputs)
    consumers: dict[str, list[str]] = {sid: [] for sid in ids}
    for sid in order:
        for dep in loaded.inputs.get(sid, ()):
            consumers[dep].append(sid)
    by_id = {s.id: s for s in spec.stages}
    stages = tuple(
        CompiledStage(
            id=sid,
            kind=kinds[sid],
            config=loaded.stage_configs[sid],
            adapter=by_id[sid].adapter,
            policy=loaded.policy_of(sid),
            batch=by_id[sid].batch,
            inputs=tuple(loaded.inputs.get(sid, ())),
            consumers=tuple(consumers[sid]),
        )
        for sid in order
    )
    graph = CompiledPipeline(name=spec.name, loaded=loaded, stages=stages, adapters=adapters)
    syncs = tuple(
        StoreSync(st.id, st.adapter, mode, graph.upstream_sources(st.id))
        for st in stages
        if st.adapter is not None
        and st.kind.needs is VectorStorePort
        and (mode := getattr(st.config, "sync", None)) in ("mirror", "append")
    )
    return CompiledPipeline(
        name=spec.name,
        loaded=loaded,
        stages=stages,
        adapters=adapters,
        resume_keys={s.id: resume_key(graph, s.id) for s in graph.sources},
        origins={s.id: f"{spec.name}/{s.id}" for s in graph.sources},
        syncs=syncs,
    )


__all__ = [
    "ADAPTER_RESUME_IGNORES",
    "CompiledAdapter",
    "CompiledPipeline",
    "CompiledStage",
    "StoreSync",
    "adapter_identity",
    "compile_pipeline",
    "database_identity",
    "resume_key",
    "stage_identity",
]
