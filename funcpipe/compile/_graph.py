"""The compiled description: `CompiledPipeline` and its parts, plain data.

A `CompiledPipeline` stands alone: it carries every setting the runner, the
renderer, the query and the estimate read, resolved once by the compiler,
and no reference to the spec it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from funcpipe.adapters.config import AdapterConfig
from funcpipe.compile._secrets import SecretSources
from funcpipe.policy.budget import DEFAULT_CHARS_PER_TOKEN
from funcpipe.policy.models import NO_POLICY, Batch, Budget, Policy, Price, RequestLimits
from funcpipe.registry import AdapterKind, StageKind
from funcpipe.spec.models import ExecutorSpec
from funcpipe.stages.config import StageConfig


@dataclass(frozen=True)
class CompiledAdapter:
    """An adapter of the pipeline: its kind and validated config.

    Attributes:
        name: the adapter's name in the spec.
        kind: the registered adapter kind.
        config: its validated config.
        price: its ``price:``, else the shipped table's for its kind and model; None if unpriced.
        chars_per_token: the ratio its tokens are estimated by where the provider counts none.
    """

    name: str
    kind: AdapterKind
    config: AdapterConfig
    price: Price | None = None
    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN

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
        batch: batching as written, if any (see `run_batch` for what runs).
        inputs: ids of the stages it reads (empty for sources).
        consumers: ids of the stages that read it (empty for terminal stages).
        embedder: the adapter that embeds what reaches it: its ``with.embedder``,
            else the adapter of the nearest upstream stage that embeds; None if none.
        origin: the origin of its rows when a source item's own is unknown:
            that of its one upstream source, or ``""`` when several feed it.
        index: its position in the spec's ``stages:``, for located errors.
        run_budget: its calls count against the spec's top-level ``budget:``
            (a stage calling an embedder or a generator; a store's calls do not).
        limits: what one request of its adapter may carry, for kinds that
            fill requests (`StageKind.fill_requests`); None otherwise.
    """

    id: str
    kind: StageKind
    config: StageConfig
    adapter: str | None
    policy: Policy
    batch: Batch | None
    inputs: tuple[str, ...]
    consumers: tuple[str, ...] = ()
    embedder: str | None = None
    origin: str = ""
    index: int = 0
    run_budget: bool = False
    limits: RequestLimits | None = None

    @property
    def run_batch(self) -> Batch | None:
        """The batching the stage runs with, its size a number.

        A size as written wins. ``auto`` (or no ``batch:``) is, for a kind
        that fills requests, its adapter's input limit, else the kind's
        default size (1 if it has none). A stage that fills requests also
        gets its adapter's token limit as ``max_tokens`` unless the spec sets
        one; and under a rate limit that costs items or tokens, a batch never
        costs more than the limiter lets start in one period.
        """
        written = self.batch
        limits = self.limits if self.kind.fill_requests else None
        size = written.size if written is not None else "auto"
        if size == "auto":
            if written is None and self.kind.default_batch is None and limits is None:
                return None
            size = (limits.inputs if limits is not None else None) or self.kind.default_batch or 1
        max_tokens = written.max_tokens if written is not None else None
        if max_tokens is None and limits is not None:
            max_tokens = limits.tokens
        rate = self.policy.rate_limit
        if self.kind.fill_requests and rate is not None and rate.cost != 1:
            capacity = rate.requests + rate.burst - 1
            if rate.cost == "items":
                size = min(size, capacity)
            else:
                max_tokens = min(max_tokens, capacity) if max_tokens is not None else capacity
        return Batch(size=size, max_wait=written.max_wait if written else None, max_tokens=max_tokens)


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
class CompiledQuery:
    """The spec's ``query:`` section, resolved.

    Attributes:
        generator: the generation adapter's name.
        embedder: the embedding adapter: ``query.embedder``, else the first
            embedding stage's; None if the pipeline has neither.
        store: the store adapter: ``query.store``, else the first stage's that
            writes vectors; None if neither.
        top_k: chunks retrieved per question.
        mode: how chunks are ranked: ``vector``, ``keyword`` or ``hybrid``.
        prompt: the prompt template (rendered at query time).
        filter: the metadata equality filter, if any.
        embed_policy: the embedding stage's policy when the question goes to
            its embedder, else none.
        policy: the generation call's resolved policy.
        params: the spec's ``params``, which the prompt may read.
    """

    generator: str
    embedder: str | None
    store: str | None
    top_k: int
    prompt: str
    filter: Mapping[str, Any] | None = None
    mode: Literal["vector", "keyword", "hybrid"] = "vector"
    embed_policy: Policy = NO_POLICY
    policy: Policy = NO_POLICY
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CompiledPipeline:
    """The whole pure description: stages in topological order, the adapters and the run's settings.

    Attributes:
        name: the pipeline's name.
        stages: the stages, in topological order.
        adapters: the adapters, by name.
        resume_keys: per source stage, the key under which the ledger records
            its settled items (see `resume_key`): an item is skipped when its
            content and this key are unchanged.
        origins: per source stage, the origin its rows carry in stores
            (``<pipeline>/<source stage>``).
        syncs: the store stages and how each mirrors its sources.
        path: the spec file (``<string>`` for specs given as text), for messages.
        base_dir: directory the spec's relative paths are resolved against.
        state_dir: ``.funcpipe/`` beside the spec.
        fingerprint: sha256 of the canonical, fully rendered document.
        text: the spec's text, parsed again only to locate run-start errors.
        description: the pipeline's description, if any.
        fail_fast: ``on_error.mode`` is ``fail_fast``.
        dead_letter: the dead-letter file the spec names, resolved; None for
            the default in the state directory.
        shutdown_timeout: seconds in-flight work gets after a signal.
        query: the resolved ``query:`` section, if any.
        secrets: where the run's secrets are, for its redactor.
        budget: the spec's top-level ``budget:``, held by the stages whose ``run_budget`` is set.
        executor: where the work runs (``executor:``; the command line and the API may override it).
    """

    name: str
    stages: tuple[CompiledStage, ...]
    adapters: Mapping[str, CompiledAdapter] = field(default_factory=dict)
    resume_keys: Mapping[str, str] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)
    syncs: tuple[StoreSync, ...] = ()
    path: Path = Path("<string>")
    base_dir: Path = Path()
    state_dir: Path = Path(".funcpipe")
    fingerprint: str = ""
    text: str = ""
    description: str | None = None
    fail_fast: bool = False
    dead_letter: Path | None = None
    shutdown_timeout: float = 30.0
    query: CompiledQuery | None = None
    secrets: SecretSources = field(default_factory=SecretSources)
    budget: Budget | None = None
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)

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
        return self.nearest_upstream(stage_id, lambda st: st.kind.name == use)

    def nearest_upstream(self, stage_id: str, test: Callable[[CompiledStage], bool]) -> CompiledStage | None:
        """The nearest stage feeding ``stage_id`` for which ``test(stage)`` is true (breadth first)."""
        seen: set[str] = set()
        frontier = list(self.stage(stage_id).inputs)
        while frontier:
            nxt: list[str] = []
            for sid in frontier:
                if sid in seen:
                    continue
                seen.add(sid)
                st = self.stage(sid)
                if test(st):
                    return st
                nxt.extend(st.inputs)
            frontier = nxt
        return None

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


__all__ = ["CompiledAdapter", "CompiledPipeline", "CompiledQuery", "CompiledStage", "StoreSync"]
