"""The kind registry: maps stage ``use:`` and adapter ``kind:`` names to what implements them.

Built-ins register themselves here. User code is named by import path
(``use: mypkg.stages:normalise``), and third-party packages register through
the entry-point groups ``funcpipe.stages`` and ``funcpipe.adapters`` (each entry
point names a `StageKind` or `AdapterKind`). Factories are import paths
resolved on first use, so validating a spec imports no client library.

A plugin entry point that cannot be used (it fails to import, names
something that is not a kind, or would replace a built-in) is not
registered: it becomes a `PluginProblem`, reported by the lookups it may
explain and by ``funcpipe schema`` (see ``funcpipe.registry._plugins``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from pydantic import BaseModel

from funcpipe.adapters.config import BUILTIN_ADAPTER_CONFIGS, AdapterConfig
from funcpipe.ports import EmbedPort, GeneratePort, VectorStorePort
from funcpipe.registry._plugins import (
    ADAPTER_GROUP,
    STAGE_GROUP,
    EntryPoints,
    Group,
    PluginProblem,
    explain_unknown,
    load_group,
    register,
)
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
            (`StageContext.embedder`): the adapter its `embedder_field`
            names, else that of the nearest upstream stage that embeds.
        embedder_field: the field of its ``with:`` block by which a spec
            may name its embedder (an adapter providing embedding, checked
            as a reference when validated); None if a spec cannot. Needs
            ``embedder=True``.
        callable_field: the field of its ``with:`` block that names a Python
            callable by import path (``map``'s ``fn``), checked importable
            when validated; None if it names none.
        sync_field: the field of its ``with:`` block that says how its store
            mirrors its sources, ``mirror`` or ``append`` (see
            ``docs/runner.md``); None if it keeps no store in sync. Needs
            ``needs=VectorStorePort``.
        origins: True if it is given the origin of each source item's rows
            (`StageContext.origin_of`).
        prepare: ``(config, ctx) -> AsyncPlan[None] | None``, or its import
            path: what to do once, before any source is read (a store's
            ``ensure`` for its embedder's fingerprint). None if nothing.
        finish: ``(config, ctx) -> AsyncPlan[object] | None``, or its import
            path: what to do once after the stream has drained (a store's
            deferred index build); never after a run that stopped early, so
            it must be idempotent and the next run's ``prepare`` must cope
            with its absence. None if nothing.
        default_batch: the batch size it uses when the spec sets no ``batch:``
            (or ``size: auto``) and its adapter declares no request limits.
        fill_requests: True if its batches are its adapter's requests: with
            ``size: auto`` (the default) a batch fills one request up to the
            limits the adapter's config declares (`AdapterConfig.request_limits`:
            inputs, and estimated tokens), and a larger ``batch.size`` is a spec error.
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
    embedder_field: str | None = None
    sync_field: str | None = None
    callable_field: str | None = None
    fill_requests: bool = False
    finish: str | Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        # A kind is declared once, at import: a declaration that cannot hold is
        # an error of the module declaring it, not of every spec that uses it.
        fields = self.config.model_fields
        declared = (
            ("embedder_field", self.embedder_field),
            ("sync_field", self.sync_field),
            ("callable_field", self.callable_field),
        )
        for attr, name in declared:
            if name is not None and name not in fields:
                raise ValueError(
                    f"stage kind {self.name!r}: {attr}={name!r} is not a field of {self.config.__name__} "
                    f"(its fields: {', '.join(fields) or 'none'})"
                )
        if self.embedder_field is not None and not self.embedder:
            raise ValueError(f"stage kind {self.name!r}: embedder_field needs embedder=True")
        if self.sync_field is not None and self.needs is not VectorStorePort:
            raise ValueError(f"stage kind {self.name!r}: sync_field needs needs=VectorStorePort")

    def load_factory(self) -> Callable[..., Any]:
        """The factory callable, importing it if it was given by path."""
        f = self.factory
        return resolve_import(f) if isinstance(f, str) else f

    def load_prepare(self) -> Callable[..., Any] | None:
        """The prepare step, importing it if it was given by path; None if the kind has none."""
        f = self.prepare
        return resolve_import(f) if isinstance(f, str) else f

    def named_embedder(self, config: BaseModel) -> str | None:
        """The embedding adapter ``config`` names in the kind's `embedder_field`, or None if it names none."""
        if self.embedder_field is None:
            return None
        value = getattr(config, self.embedder_field, None)
        return value if isinstance(value, str) else None

    def named_callable(self, config: BaseModel) -> str | None:
        """The import path ``config`` names in the kind's `callable_field`, or None if it names none."""
        if self.callable_field is None:
            return None
        value = getattr(config, self.callable_field, None)
        return value if isinstance(value, str) else None

    def sync_mode(self, config: BaseModel) -> Literal["mirror", "append"] | None:
        """How ``config``'s store mirrors its sources (its `sync_field`), or None if the kind keeps none in sync."""
        if self.sync_field is None:
            return None
        value = getattr(config, self.sync_field, None)
        return value if value in ("mirror", "append") else None

    def load_finish(self) -> Callable[..., Any] | None:
        """The finish step, importing it if it was given by path; None if the kind has none."""
        f = self.finish
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


class KindLookupError(LookupError):
    """A name that names no usable kind.

    Attributes:
        hint: what to do, when the registry knows better than a list of names
            (a plugin that cannot be used, say); None otherwise.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def _installed(group: str) -> Iterable[EntryPoint]:
    return entry_points(group=group)


@dataclass
class Registry:
    """Stage and adapter kinds by name.

    Attributes:
        stages: the stage kinds, by ``use:`` name.
        adapters: the adapter kinds, by ``kind:`` name.
        plugin_problems: the plugin entry points that could not be used, once
            `load_entry_points` has run.
    """

    stages: dict[str, StageKind] = field(default_factory=dict)
    adapters: dict[str, AdapterKind] = field(default_factory=dict)
    plugin_problems: list[PluginProblem] = field(default_factory=list)
    _entry_points_loaded: bool = False
    _owners: dict[tuple[str, str], str] = field(default_factory=dict)
    """Who registered a plugin-visible name: ``the built-in stage kind 'embed'``..."""

    def add_stage(self, kind: StageKind) -> None:
        """Register a stage kind (a later registration of the same name wins)."""
        self.stages[kind.name] = kind

    def add_adapter(self, kind: AdapterKind) -> None:
        """Register an adapter kind (a later registration of the same name wins)."""
        self.adapters[kind.name] = kind

    def load_entry_points(self, found: EntryPoints | None = None) -> None:
        """Register the kinds that installed packages declare, once.

        Each entry point is loaded on its own. One that cannot be used is not
        registered and is recorded in `plugin_problems`; the others still are.
        A plugin never replaces a kind already registered (a built-in, or
        another plugin's): it is refused, naming both.

        Args:
            found: a group's name -> its entry points (default: those of the
                installed distributions).
        """
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        lookup = found or _installed
        groups: tuple[tuple[Group, type, type, dict[str, Any]], ...] = (
            (STAGE_GROUP, StageKind, AdapterKind, self.stages),
            (ADAPTER_GROUP, AdapterKind, StageKind, self.adapters),
        )
        for group, expected, other, table in groups:
            for item in load_group(group, lookup(group), self.plugin_problems):
                problem = register(item, expected, other, table, self._owners)
                if problem is not None:
                    self.plugin_problems.append(problem)

    def _unknown(self, group: Group, what: str, name: str, known: dict[str, Any]) -> KindLookupError:
        """The error for a name that is not registered, explained by a plugin problem when one may."""
        message = unknown_name(what, name, known)
        close = did_you_mean(name, known) is not None
        explained = explain_unknown(self.plugin_problems, group, name, message, close=close)
        return KindLookupError(*explained) if explained else KindLookupError(message)

    def stage(self, name: str) -> StageKind:
        """The stage kind for a ``use:`` name or ``module:attr`` import path.

        An import path naming a `StageKind` gives that kind; naming a plain
        callable gives a ``map`` stage bound to it.

        Raises:
            KindLookupError: unknown name, with a "did you mean" suggestion, or
                explained by a plugin that cannot be used.
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
        raise self._unknown(STAGE_GROUP, "stage kind", name, self.stages)

    def adapter(self, name: str) -> AdapterKind:
        """The adapter kind for a ``kind:`` name, or a ``module:attr`` path naming an `AdapterKind`.

        Raises:
            LookupError: unknown name (a `KindLookupError`, with a "did you
                mean" suggestion or the plugin that cannot be used), or an
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
        raise self._unknown(ADAPTER_GROUP, "adapter kind", name, self.adapters)


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


def builtin_registry() -> Registry:
    """A new registry with only the built-in kinds (plugin entry points not yet loaded)."""
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
            fill_requests=True,
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
            sync_field="sync",
            prepare=f"{s}.vectors:prepare_upsert",
            finish=f"{s}.vectors:finish_upsert",
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
            embedder_field="embedder",
            description="Emit the nearest chunks for each item's text.",
        ),
        StageKind(
            "map",
            sc.CallableConfig,
            f"{s}.user:map_stage",
            callable_field="fn",
            description="Transform each item with a Python callable.",
        ),
        StageKind(
            "filter",
            sc.CallableConfig,
            f"{s}.user:filter_stage",
            callable_field="fn",
            description="Keep the items for which a Python callable is true.",
        ),
        StageKind(
            "sink.jsonl",
            sc.JsonlSinkConfig,
            f"{s}.sinks:sink_jsonl",
            "sink",
            prepare=f"{s}.sinks:prepare_sink_jsonl",
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
        "qdrant": (VectorStorePort,),
        "chroma": (VectorStorePort,),
        "lancedb": (VectorStorePort,),
        "extractive": (GeneratePort,),
        "scripted": (EmbedPort, GeneratePort),
    }
    for name, cfg in BUILTIN_ADAPTER_CONFIGS.items():
        doc = (cfg.__doc__ or "").strip().splitlines()[0]
        reg.add_adapter(AdapterKind(name, cfg, provides[name], f"{a}.{name}:create", doc))
    reg._owners.update({(STAGE_GROUP, n): f"the built-in stage kind {n!r}" for n in reg.stages})
    reg._owners.update({(ADAPTER_GROUP, n): f"the built-in adapter kind {n!r}" for n in reg.adapters})
    return reg


REGISTRY = builtin_registry()
"""The process-wide registry with the built-in kinds."""

__all__ = [
    "ADAPTER_GROUP",
    "PORT_NAMES",
    "REGISTRY",
    "STAGE_GROUP",
    "AdapterKind",
    "KindLookupError",
    "PluginProblem",
    "Registry",
    "StageKind",
    "builtin_registry",
    "did_you_mean",
    "resolve_import",
    "unknown_name",
]
