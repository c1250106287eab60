"""The second validation pass: kinds, configs, references, ports and the stage graph.

It works on the plain data rather than on the validated model, so that every
stage and adapter is checked even when another part of the document is
invalid: one run of ``funcpipe validate`` reports every error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError

from funcpipe.adapters.config import AdapterConfig
from funcpipe.errors import SpecError
from funcpipe.policy.models import Policy
from funcpipe.ports import EmbedPort, GeneratePort, VectorStorePort
from funcpipe.registry import (
    PORT_NAMES,
    AdapterKind,
    KindLookupError,
    Registry,
    StageKind,
    did_you_mean,
    unknown_name,
)
from funcpipe.spec._diagnose import pydantic_errors, show, value_at
from funcpipe.spec._paths import Path, format_path
from funcpipe.spec._yaml import Document
from funcpipe.spec.sources import source_path_errors
from funcpipe.spec.templating import TemplateError, check_template
from funcpipe.stages.imports import importable, resolve_import

PROMPT_VARIABLES = ("chunks", "params", "question")
"""The variables a ``query.prompt`` template is rendered with."""

_IMPORT_HINT = "make sure the module is importable: beside the spec file, installed, or on PYTHONPATH"

TEMPLATE_FIELDS: tuple[Path, ...] = (("query", "prompt"),)
"""Fields that hold run-time templates: compiled when validated, rendered when run."""


@dataclass
class Checked:
    """What the second pass resolved, alongside the errors it found."""

    errors: list[SpecError] = field(default_factory=list)
    adapters: dict[str, AdapterConfig] = field(default_factory=dict)
    adapter_kinds: dict[str, AdapterKind] = field(default_factory=dict)
    stage_configs: dict[str, BaseModel] = field(default_factory=dict)
    stage_kinds: dict[str, StageKind] = field(default_factory=dict)
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    order: tuple[str, ...] = ()
    """The stage ids in topological order (inputs first); empty when the inputs form a cycle."""


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _hint(exc: LookupError, default: str) -> str:
    # A lookup that a plugin problem explains knows better than the list of names.
    return exc.hint if isinstance(exc, KindLookupError) and exc.hint else default


def _key(model: type[BaseModel], field_name: str) -> str:
    # The key a spec writes for a declared field (its alias, if it has one).
    return model.model_fields[field_name].alias or field_name


def _port(port: type) -> str:
    return PORT_NAMES.get(port, port.__name__)


@dataclass
class _Checker:
    doc: Document
    registry: Registry
    out: Checked = field(default_factory=Checked)

    def error(self, path: Path, message: str, hint: str, *, at_key: bool = False) -> None:
        # A value interpolated from the environment may be a secret: show it as written.
        written = self.doc.written.get(path)
        value = value_at(self.doc.data, path) if written is not None else None
        if written is not None and isinstance(value, str) and value:
            message = message.replace(value, written)
        self.out.errors.append(self.doc.error(path, message, hint=hint, at_key=at_key))

    def run(self) -> Checked:
        data = _mapping(self.doc.data)
        adapters = _mapping(data.get("adapters"))
        policies = _mapping(data.get("policies"))
        for name, body in adapters.items():
            self.adapter(name, body)
        stages = data.get("stages")
        stage_list = stages if isinstance(stages, list) else []
        ids = self.stage_ids(stage_list)
        for i, stage in enumerate(stage_list):
            if isinstance(stage, dict):
                self.stage(i, stage, adapters, policies, ids)
        self.cycles(stage_list)
        query = data.get("query")
        if isinstance(query, dict):
            self.query(query, adapters, policies, stage_list)
        return self.out

    # adapters

    def adapter(self, name: str, body: object) -> None:
        path: Path = ("adapters", name)
        if not isinstance(body, dict):
            return
        kind = body.get("kind")
        known = ", ".join(sorted(self.registry.adapters))
        if kind is None:
            self.error(
                path,
                f"adapter {name!r} has no kind",
                f"add `kind:` with one of: {known}",
            )
            return
        if not isinstance(kind, str):
            self.error((*path, "kind"), f"kind should be a string, got {show(kind)}", f"adapter kinds: {known}")
            return
        try:
            ak = self.registry.adapter(kind)
        except LookupError as exc:
            self.error((*path, "kind"), str(exc), _hint(exc, f"adapter kinds: {known}"))
            return
        self.out.adapter_kinds[name] = ak
        try:
            self.out.adapters[name] = ak.config.model_validate(body)
        except ValidationError as exc:
            self.out.errors.extend(pydantic_errors(self.doc, exc, model=ak.config, root=path))

    # stages

    def stage_ids(self, stages: list[Any]) -> dict[str, int]:
        ids: dict[str, int] = {}
        for i, stage in enumerate(stages):
            sid = stage.get("id") if isinstance(stage, dict) else None
            if not isinstance(sid, str):
                continue
            if sid in ids:
                first = self.doc.place(("stages", ids[sid], "id"))[0].value
                self.error(
                    ("stages", i, "id"),
                    f"duplicate stage id {sid!r} (first used at line {first.line})",
                    "stage ids name stages in `from:` and in reports: make each one unique",
                )
                continue
            ids[sid] = i
        return ids

    def stage(
        self,
        i: int,
        stage: dict[str, Any],
        adapters: dict[str, Any],
        policies: dict[str, Any],
        ids: dict[str, int],
    ) -> None:
        path: Path = ("stages", i)
        sid = stage.get("id")
        use = stage.get("use")
        kind = self.stage_kind(path, use) if isinstance(use, str) else None
        own_id = isinstance(sid, str) and ids.get(sid) == i
        if kind is not None:
            if own_id:
                self.out.stage_kinds[str(sid)] = kind
            self.stage_config(path, kind, stage, str(sid) if own_id else None, adapters)
            self.stage_adapter(path, kind, stage.get("adapter"), adapters)
            self.stage_batch(path, kind, stage)
        policy = stage.get("policy")
        if isinstance(policy, str):
            self.reference((*path, "policy"), policy, policies, "policy", "define it under `policies:`")
        self.stage_inputs(i, stage, kind, ids, own_id)

    def stage_kind(self, path: Path, use: str) -> StageKind | None:
        where: Path = (*path, "use")
        try:
            return self.registry.stage(use)
        except LookupError as exc:
            self.error(
                where,
                str(exc),
                _hint(
                    exc,
                    "built-in kinds: "
                    + ", ".join(sorted(self.registry.stages))
                    + "; or name a callable as package.module:function",
                ),
            )
        except ImportError as exc:
            self.error(
                where,
                f"cannot import {use!r}: {exc}",
                _IMPORT_HINT,
            )
        except Exception as exc:
            # Resolving an import path runs the user's module; whatever it
            # raises is an error in the spec's code, reported where it is named.
            self.error(
                where,
                f"importing {use!r} failed: {type(exc).__name__}: {exc}",
                "fix the error in that module",
            )
        return None

    def stage_config(
        self,
        path: Path,
        kind: StageKind,
        stage: dict[str, Any],
        sid: str | None,
        adapters: dict[str, Any],
    ) -> None:
        body = stage.get("with", {})
        if not isinstance(body, dict):
            return
        where: Path = (*path, "with")
        try:
            config = kind.config.model_validate(body)
        except ValidationError as exc:
            self.out.errors.extend(pydantic_errors(self.doc, exc, model=kind.config, root=where))
            return
        if sid is not None:
            self.out.stage_configs[sid] = config
        fn = kind.named_callable(config)
        if fn is not None and kind.callable_field is not None:
            self.callable((*where, _key(kind.config, kind.callable_field)), fn)
        embedder = kind.named_embedder(config)
        if embedder is not None and kind.embedder_field is not None:
            key = _key(kind.config, kind.embedder_field)
            self.port_reference((*where, key), embedder, adapters, EmbedPort, f"stage kind {kind.name!r}")

    def callable(self, path: Path, target: str) -> None:
        try:
            obj = resolve_import(target)
        except ImportError as exc:
            self.error(
                path,
                f"cannot import {target!r}: {exc}",
                _IMPORT_HINT,
            )
            return
        except Exception as exc:
            # As for `use:`: the user's module raised while being imported.
            self.error(
                path,
                f"importing {target!r} failed: {type(exc).__name__}: {exc}",
                "fix the error in that module",
            )
            return
        if not callable(obj):
            self.error(path, f"{target!r} is not callable", "name a function: package.module:function")

    def stage_adapter(self, path: Path, kind: StageKind, adapter: object, adapters: dict[str, Any]) -> None:
        if adapter is None:
            if kind.needs is not None:
                self.error(
                    path,
                    f"stage kind {kind.name!r} needs an adapter providing {_port(kind.needs)}",
                    self.providers_hint(kind.needs),
                )
            return
        if not isinstance(adapter, str):
            return
        where: Path = (*path, "adapter")
        if kind.needs is None:
            self.error(
                where,
                f"stage kind {kind.name!r} takes no adapter, got {adapter!r}",
                "remove `adapter:` from this stage",
            )
            return
        self.port_reference(where, adapter, adapters, kind.needs, f"stage kind {kind.name!r}")

    def stage_batch(self, path: Path, kind: StageKind, stage: dict[str, Any]) -> None:
        """A batch larger than one request of the stage's adapter may carry is an error, where it is written."""
        batch, adapter = stage.get("batch"), stage.get("adapter")
        if not kind.fill_requests or not isinstance(batch, dict) or not isinstance(adapter, str):
            return
        config = self.out.adapters.get(adapter)
        limits = config.request_limits if config is not None else None
        if limits is None:
            return
        for field_name, limit, unit in (("size", limits.inputs, "inputs"), ("max_tokens", limits.tokens, "tokens")):
            value = batch.get(field_name)
            if limit is None or type(value) is not int or value <= limit:
                continue
            self.error(
                (*path, "batch", field_name),
                f"batch {field_name} {value} is more than adapter {adapter!r} takes in one request ({limit} {unit})",
                f"write `{field_name}: {limit}` or less"
                + (", or `size: auto` to fill each request to the limit" if field_name == "size" else ""),
            )

    def providers_hint(self, port: type) -> str:
        names = [n for n, ak in self.out.adapter_kinds.items() if port in ak.provides]
        if names:
            return f"add `adapter:` naming one of: {', '.join(names)}"
        kinds = sorted(n for n, ak in self.registry.adapters.items() if port in ak.provides)
        return f"declare an adapter under `adapters:` of kind {' / '.join(kinds)}, and name it"

    def port_reference(self, where: Path, name: str, adapters: dict[str, Any], port: type, user: str) -> None:
        if not self.reference(where, name, adapters, "adapter", "declare it under `adapters:`"):
            return
        ak = self.out.adapter_kinds.get(name)
        if ak is None or port in ak.provides:
            return
        provides = " and ".join(_port(p) for p in ak.provides)
        self.error(
            where,
            f"adapter {name!r} (kind {ak.name}) provides {provides}, but {user} needs {_port(port)}",
            self.providers_hint(port),
        )

    def reference(self, where: Path, name: str, known: dict[str, Any], what: str, fix: str) -> bool:
        if name in known:
            return True
        message = unknown_name(what, name, known) if known else f"unknown {what} {name!r}: none is defined"
        self.error(where, message, fix)
        return False

    def stage_inputs(
        self, i: int, stage: dict[str, Any], kind: StageKind | None, ids: dict[str, int], own: bool
    ) -> None:
        path: Path = ("stages", i)
        sid = stage.get("id")
        raw = stage.get("from")
        names: list[tuple[Path, str]] = []
        if isinstance(raw, str):
            names = [((*path, "from"), raw)]
        elif isinstance(raw, list):
            names = [((*path, "from", j), n) for j, n in enumerate(raw) if isinstance(n, str)]
        elif raw is not None:
            return
        if kind is not None and kind.role == "source" and raw is not None:
            self.error(
                (*path, "from"),
                f"source stage kind {kind.name!r} reads no input, but `from:` is set",
                "remove `from:` from this source stage",
            )
            return
        for where, name in names:
            self.reference(where, name, ids, "stage", "name the id of a stage in `stages:`")
        if not own:
            return
        if raw is not None:
            self.out.inputs[str(sid)] = tuple(n for _, n in names if n in ids)
        elif kind is not None and kind.role == "source":
            self.out.inputs[str(sid)] = ()
        elif i == 0:
            if kind is not None:
                sources = sorted(n for n, k in self.registry.stages.items() if k.role == "source")
                self.error(
                    (*path, "use"),
                    f"the first stage {sid!r} ({kind.name}) has no input",
                    f"start with a source stage ({', '.join(sources)}), or name inputs with `from:`",
                )
        else:
            prev = self.doc.data["stages"][i - 1]
            prev_id = prev.get("id") if isinstance(prev, dict) else None
            if isinstance(prev_id, str):
                self.out.inputs[str(sid)] = (prev_id,)

    def cycles(self, stages: list[Any]) -> None:
        order: dict[str, int] = {}
        for i, stage in enumerate(stages):
            sid = stage.get("id") if isinstance(stage, dict) else None
            if isinstance(sid, str):
                order.setdefault(sid, i)
        inputs = self.out.inputs
        state: dict[str, int] = {}
        reported: set[frozenset[str]] = set()
        topological: list[str] = []

        def visit(sid: str, trail: list[str]) -> None:
            if state.get(sid) == 2:
                return
            if state.get(sid) == 1:
                loop = trail[trail.index(sid) :]
                if frozenset(loop) not in reported:
                    reported.add(frozenset(loop))
                    self.cycle(loop, order, stages)
                return
            state[sid] = 1
            for dep in inputs.get(sid, ()):
                visit(dep, [*trail, sid])
            state[sid] = 2
            topological.append(sid)

        for sid in inputs:
            visit(sid, [])
        # The one topological order of the pipeline: the compiler takes it as it is.
        self.out.order = () if reported else tuple(topological)

    def cycle(self, loop: list[str], order: dict[str, int], stages: list[Any]) -> None:
        def explicit(sid: str) -> bool:
            return "from" in stages[order[sid]]

        # Name the cycle from the first stage (in document order) whose
        # `from:` takes part in it: that is where the fix usually goes.
        start = min((s for s in loop if explicit(s)), key=order.__getitem__, default=loop[0])
        k = loop.index(start)
        ring = [*loop[k:], *loop[:k], start]
        i = order[start]
        where: Path = ("stages", i, "id")
        if explicit(start):
            raw = stages[i]["from"]
            where = ("stages", i, "from")
            if isinstance(raw, list) and ring[1] in raw:
                where = (*where, raw.index(ring[1]))
        self.error(
            where,
            f"stage inputs form a cycle: {' -> '.join(ring)} (each reads from the next)",
            "a stage can only read stages that do not read it back: fix `from:`",
        )

    # query

    def query(
        self,
        query: dict[str, Any],
        adapters: dict[str, Any],
        policies: dict[str, Any],
        stages: list[Any],
    ) -> None:
        ports: tuple[tuple[str, type, str], ...] = (
            ("adapter", GeneratePort, "embed"),
            ("embedder", EmbedPort, "embed"),
            ("store", VectorStorePort, "vector.upsert"),
        )
        for key, port, default_from in ports:
            name = query.get(key)
            if isinstance(name, str):
                self.port_reference(("query", key), name, adapters, port, "query")
            elif name is None and key != "adapter" and not self.has_default(stages, key):
                self.error(
                    ("query",),
                    f"query has no {key}: set `query.{key}`, or give the pipeline "
                    f"a `{default_from}` stage with an adapter",
                    f"name an adapter providing {_port(port)}",
                )
        policy = query.get("policy")
        if isinstance(policy, str):
            self.reference(("query", "policy"), policy, policies, "policy", "define it under `policies:`")
        prompt = query.get("prompt")
        if isinstance(prompt, str):
            self.out.errors.extend(check_prompt(self.doc, ("query", "prompt"), prompt))

    def has_default(self, stages: list[Any], key: str) -> bool:
        """True if a stage with an adapter gives the query its default ``embedder`` or ``store``."""
        for stage in stages:
            sid = stage.get("id") if isinstance(stage, dict) else None
            kind = self.out.stage_kinds.get(sid) if isinstance(sid, str) else None
            if kind is None or not isinstance(stage.get("adapter"), str):
                continue
            if kind.embeds if key == "embedder" else kind.stores_vectors:
                return True
        return False


def template_error(doc: Document, path: Path, exc: TemplateError) -> SpecError:
    """A `TemplateError` located in the document: on its line when the text is a ``|`` block."""
    place, _ = doc.place(path)
    mark = place.value
    if place.style == "|" and exc.lineno is not None and mark.file == doc.file:
        line = mark.line + exc.lineno
        lines = doc.text.splitlines()
        if 0 < line <= len(lines):
            source = lines[line - 1]
            col = len(source) - len(source.lstrip(" ")) + 1
            return SpecError(
                exc.message,
                file=mark.file,
                line=line,
                col=col,
                path=format_path(path),
                hint=exc.hint,
            )
    return doc.error(path, exc.message, hint=exc.hint)


def check_prompt(doc: Document, path: Path, source: str) -> list[SpecError]:
    """Compile a run-time template in the sandbox; report syntax errors and unknown names."""
    try:
        names = check_template(source)
    except TemplateError as exc:
        return [template_error(doc, path, exc)]
    errors: list[SpecError] = []
    for name in sorted(names - set(PROMPT_VARIABLES)):
        guess = did_you_mean(name, PROMPT_VARIABLES)
        errors.append(
            doc.error(
                path,
                f"the template reads {name!r}, which is not defined at run time"
                + (f" (did you mean {guess!r}?)" if guess else ""),
                hint=f"a prompt can read: {', '.join(PROMPT_VARIABLES)}",
            )
        )
    return errors


def check_document(doc: Document, registry: Registry, base_dir: FsPath, *, check_sources: bool = True) -> Checked:
    """Run the second pass over a document's data.

    User callables named by import path are imported with ``base_dir`` (the
    spec's directory) importable, as the runner does. With ``check_sources``,
    source paths written literally must exist (see `funcpipe.spec.sources`).
    """
    with importable(base_dir):
        checked = _Checker(doc, registry).run()
    if check_sources:
        checked.errors.extend(source_path_errors(doc, checked.stage_configs, base_dir))
    return checked


def resolve_policy(value: object, named: dict[str, Policy], fallback: Policy) -> Policy:
    """A stage's policy: a named one, an inline one, or ``fallback``."""
    if isinstance(value, Policy):
        return value
    if isinstance(value, str):
        return named.get(value, fallback)
    return fallback
