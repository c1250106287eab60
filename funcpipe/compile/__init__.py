"""The compiler: a validated spec becomes a `CompiledPipeline`, a pure description.

Compiling resolves every kind against the registry and orders the graph. It
opens no client, reads no file, starts no task and imports no stage factory:
the runner binds the description to resources when it runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from funcpipe.adapters.config import AdapterConfig
from funcpipe.errors import SpecError, SpecErrors
from funcpipe.policy.models import Batch, Policy
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
class CompiledPipeline:
    """The whole pure description: stages in topological order, and the adapters."""

    name: str
    loaded: LoadedSpec
    stages: tuple[CompiledStage, ...]
    adapters: Mapping[str, CompiledAdapter] = field(default_factory=dict)

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
    return CompiledPipeline(name=spec.name, loaded=loaded, stages=stages, adapters=adapters)


__all__ = ["CompiledAdapter", "CompiledPipeline", "CompiledStage", "compile_pipeline"]
