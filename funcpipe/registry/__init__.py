"""The kind registry: maps stage ``use:`` and adapter ``kind:`` names to what implements them.

Built-ins register themselves here. User code is named by import path
(``use: mypkg.stages:normalise``), and third-party packages register through
the entry-point groups ``funcpipe.stages`` and ``funcpipe.adapters`` (each entry
point names a `StageKind` or `AdapterKind`). Factories are import paths
resolved on first use, so validating a spec imports no client library.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import BaseModel

from funcpipe.adapters.config import BUILTIN_ADAPTER_CONFIGS, AdapterConfig
from funcpipe.ports import EmbedPort, GeneratePort, VectorStorePort
from funcpipe.stages import config as sc
from funcpipe.stages.imports import resolve_import

Role = Literal["source", "transform", "sink"]


@dataclass(frozen=True)
class StageKind:
    """A stage kind.

    Attributes:
        name: the ``use:`` name.
        config: the model of its ``with:`` block.
        factory: ``(config, ctx) -> Transform``, or the import path of one.
        role: source (no input), transform, or sink (writes and passes items on).
        needs: the port its ``adapter:`` must provide, or None if it takes no adapter.
        description: one line for docs, the schema and ``--help``.
        external: True if it calls a service (shown in dry-run estimates).
        embedder: True if it is given the embedder that feeds it
            (`StageContext.embedder`): the adapter its ``with.embedder``
            names, else that of the nearest upstream stage that embeds.
        origins: True if it is given the origin of each source item's rows
            (`StageContext.origin_of`).
        prepare: ``(config, ctx) -> AsyncPlan[None] | None``, or its import
            path: what to do once, before any source is read (a store's
            ``ensure`` for its embedder's fingerprint). None if nothing.
        default_batch: the batch size it uses when the spec sets no ``batch:``.
    """

    name: str
    config: type[BaseModel]
    factory: str | Callable[..., Any]
    role: Role = "transform"
    needs: type | None = None
    description: str = ""
    external: bool = False
    embedder: bool = False
    origins: bool = False
    prepare: str | Callable[..., Any] | None = None
    default_batch: int | None = None

    def load_factory(self) -> Callable[..., Any]:
        """The factory callable, importing it if it was given by path."""
        f = self.factory
        return resolve_import(f) if isinstance(f, str) else f

    def load_prepare(self) -> Callable[..., Any] | None:
        """The prepare step, importing it if it was given by path; None if the kind has none."""
        f = self.prepare
        return resolve_import(f) if isinstance(f, str) else f

    @property
    def embeds(self) -> bool:
        """True if it embeds items: its adapter is the embedder of the stages it feeds."""
        return self.needs is EmbedPort

    @property
    def stores_vectors(self) -> bool:
        """True if it writes vectors to a store: the store a spec's query reads by default."""
        return self.role == "sink" and self.needs is VectorStorePort


@dataclass(frozen=True)
class AdapterKind:
    """An adapter kind.

    Attributes:
        name: the ``kind:`` name.
        config: the model of its fields.
        provides: the ports it implements.
        factory: ``(config, resources) -> port implementation``, or its import path.
        description: one line for docs and the schema.
    """

    name: str
    config: type[AdapterConfig]
    provides: tuple[type, ...]
    factory: str | Callable[..., Any]
    description: str = ""

    def load_factory(self) -> Callable[..., Any]:
        """The factory callable, importing it if it was given by path."""
        f = self.factory
        return resolve_import(f) if isinstance(f, str) else f


PORT_NAMES: dict[type, str] = {
    EmbedPort: "embedding",
    VectorStorePort: "vector store",
    GeneratePort: "generation",
}


@dataclass
class Registry:
    """Stage and adapter kinds by name."""

    stages: dict[str, StageKind] = field(default_factory=dict)
    adapters: dict[str, AdapterKind] = field(default_factory=dict)
    _entry_points_loaded: bool = False

    def add_stage(self, kind: StageKind) -> None:
        """Register a stage kind (a later registration of the same name wins)."""
        self.stages[kind.name] = kind

    def add_adapter(self, kind: AdapterKind) -> None:
        """Register an adapter kind (a later registration of the same name wins)."""
        self.adapters[kind.name] = kind

    def load_entry_points(self) -> None:
        """Register the kinds that installed packages declare, once."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group="funcpipe.stages"):
            obj = ep.load()
            if isinstance(obj, StageKind):
                self.add_stage(obj)
        for ep in entry_points(group="funcpipe.adapters"):
            obj = ep.load()
            if isinstance(obj, AdapterKind):
                self.add_adapter(obj)

    def stage(self, name: str) -> StageKind:
        """The stage kind for a ``use:`` name or ``module:attr`` import path.

        An import path naming a `StageKind` gives that kind; naming a plain
        callable gives a ``map`` stage bound to it.

        Raises:
            LookupError: unknown name, with a "did you mean" suggestion.
            ImportError: an import path that cannot be resolved.
        """
        if name in self.stages:
            return self.stages[name]
        if ":" in name:
            obj = resolve_import(name)
            if isinstance(obj, StageKind):
                return obj
            if callable(obj):
                base = self.stages["map"]
                return StageKind(
                    name=name,
                    config=sc.StageConfig,
                    factory=_bound_map_factory(name, base),
                    role="transform",
                    description=f"map with {name}",
                )
            raise ImportError(f"{name!r} is neither a StageKind nor a callable")
        self.load_entry_points()
        if name in self.stages:
            return self.stages[name]
        raise LookupError(unknown_name("stage kind", name, self.stages))

    def adapter(self, name: str) -> AdapterKind:
        """The adapter kind for a ``kind:`` name, or a ``module:attr`` path naming an `AdapterKind`.

        Raises:
            LookupError: unknown name, with a "did you mean" suggestion, or an
                import path that cannot be resolved or names something else.
        """
        if name not in self.adapters and ":" in name:
            try:
                obj = resolve_import(name)
            except ImportError as exc:
                raise LookupError(f"adapter kind {name!r} cannot be imported: {exc}") from None
            if not isinstance(obj, AdapterKind):
                raise LookupError(f"{name!r} is a {type(obj).__name__}, not an AdapterKind")
            return obj
        if name not in self.adapters:
            self.load_entry_points()
        if name in self.adapters:
            return self.adapters[name]
        raise LookupError(unknown_name("adapter kind", name, self.adapters))


def _bound_map_factory(path: str, base: StageKind) -> Callable[..., Any]:
    def factory(_config: BaseModel, ctx: Any) -> Any:
        return base.load_factory()(sc.CallableConfig(fn=path), ctx)

    return factory


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``name``, if any is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_name(what: str, name: str, choices: Iterable[str]) -> str:
    """``unknown stage kind 'x' (did you mean 'y'?)``, or the list of known names."""
    choices = sorted(choices)
    guess = did_you_mean(name, choices)
    if guess:
        return f"unknown {what} {name!r} (did you mean {guess!r}?)"
    return f"unknown {what} {name!r}; known: {', '.join(choices)}"


def _builtins() -> Registry:
    reg = Registry()
    s = "funcpipe.stages"
    for kind in (
        StageKind(
            "source.files",
            sc.FilesSourceConfig,
            f"{s}.files:source_files",
            "source",
            description="Read files under a directory, one item per file.",
        ),
        StageKind(
            "source.jsonl",
            sc.JsonlSourceConfig,
            f"{s}.files:source_jsonl",
            "source",
            description="Read a JSON Lines file, one item per line.",
        ),
        StageKind("text.clean", sc.CleanConfig, f"{s}.text:clean", description="Normalise text."),
        StageKind(
            "text.chunk",
            sc.ChunkConfig,
            f"{s}.text:chunk",
            description="Split text into overlapping chunks.",
        ),
        StageKind(
            "embed",
            sc.EmbedConfig,
            f"{s}.vectors:embed",
            needs=EmbedPort,
            external=True,
            default_batch=64,
            description="Embed each item's text.",
        ),
        StageKind(
            "vector.upsert",
            sc.UpsertConfig,
            f"{s}.vectors:upsert",
            "sink",
            needs=VectorStorePort,
            external=True,
            embedder=True,
            origins=True,
            prepare=f"{s}.vectors:prepare_upsert",
            default_batch=256,
            description="Upsert embedded chunks into a vector store.",
        ),
        StageKind(
            "vector.query",
            sc.VectorQueryConfig,
            f"{s}.vectors:query",
            needs=VectorStorePort,
            external=True,
            embedder=True,
            description="Emit the nearest chunks for each item's text.",
        ),
        StageKind(
            "map",
            sc.CallableConfig,
            f"{s}.user:map_stage",
            description="Transform each item with a Python callable.",
        ),
        StageKind(
            "filter",
            sc.CallableConfig,
            f"{s}.user:filter_stage",
            description="Keep the items for which a Python callable is true.",
        ),
        StageKind(
            "sink.jsonl",
            sc.JsonlSinkConfig,
            f"{s}.sinks:sink_jsonl",
            "sink",
            default_batch=256,
            description="Write items to a JSON Lines file.",
        ),
        StageKind(
            "sink.stdout",
            sc.StdoutSinkConfig,
            f"{s}.sinks:sink_stdout",
            "sink",
            description="Print items to standard output.",
        ),
    ):
        reg.add_stage(kind)
    a = "funcpipe.adapters"
    provides: dict[str, tuple[type, ...]] = {
        "hashing": (EmbedPort,),
        "wordllama": (EmbedPort,),
        "openai": (EmbedPort, GeneratePort),
        "ollama": (EmbedPort, GeneratePort),
        "cohere": (EmbedPort,),
        "anthropic": (GeneratePort,),
        "pgvector": (VectorStorePort,),
        "memory": (VectorStorePort,),
        "extractive": (GeneratePort,),
    }
    for name, cfg in BUILTIN_ADAPTER_CONFIGS.items():
        doc = (cfg.__doc__ or "").strip().splitlines()[0]
        reg.add_adapter(AdapterKind(name, cfg, provides[name], f"{a}.{name}:create", doc))
    return reg


REGISTRY = _builtins()
"""The process-wide registry with the built-in kinds."""

__all__ = [
    "PORT_NAMES",
    "REGISTRY",
    "AdapterKind",
    "Registry",
    "StageKind",
    "did_you_mean",
    "resolve_import",
    "unknown_name",
]
