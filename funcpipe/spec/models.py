"""Pydantic models of the spec document (``version: 1``).

Adapter fields and stage ``with:`` blocks are kept as plain mappings here and
validated against the registry's config models in a second pass (see
``funcpipe.spec._checks``), so that kinds registered by plugins validate the
same way as built-ins.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from funcpipe.policy.models import Batch, Budget, Duration, Int, Policy, no_bool

# Names become file names (.funcpipe/<name>.dead.jsonl, reports) and appear in
# logs: ASCII, starting with a letter or _, so never '.', '..' or a path. Pydantic
# matches patterns with the Rust engine, whose `$` is the end of the text (a
# trailing newline does not match).
_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"

MAX_NAME = 64
"""Characters in a pipeline name or a stage id at most."""

MAX_STAGES = 1_000
"""Stages in one pipeline at most."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*", re.ASCII)


def _check_name(value: str) -> str:
    shown = repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
    if len(value) > MAX_NAME:
        raise ValueError(f"{shown} is {len(value)} characters long; a name has at most {MAX_NAME}")
    if not _NAME.fullmatch(value):
        raise ValueError(f"{shown} is not a usable name: start with a letter or _, then use letters, digits, _, . or -")
    return value


Name = Annotated[
    str,
    AfterValidator(_check_name),
    Field(json_schema_extra={"pattern": _ID_PATTERN, "maxLength": MAX_NAME}),
]
"""A pipeline name or stage id: a letter or _, then letters, digits, _, . and -; 64 at most."""

Ref = Annotated[str, Field(max_length=256)]
"""A reference to something named elsewhere in the spec (the second pass reports unknown ones, '' included)."""


def _policy_form(value: object) -> str:
    return "name" if isinstance(value, str) else "inline"


PolicyRef = Annotated[
    Annotated[str, Tag("name")] | Annotated[Policy, Tag("inline")],
    Discriminator(_policy_form),
]
"""A policy named under ``policies:``, or written inline.

The discriminator picks one form by the value's type, so an invalid inline
policy reports its own errors rather than also "not a string".
"""


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class StageSpec(_Spec):
    """One stage of the pipeline."""

    id: Name = Field(..., description="Unique stage id, used by `from:` and in reports.")
    use: Ref = Field(..., description="Stage kind (e.g. text.chunk) or a callable's import path module:attr.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="The stage kind's settings.")
    adapter: Ref | None = Field(None, description="Name of an adapter under `adapters:`.")
    policy: PolicyRef | None = Field(None, description="Name of a policy under `policies:`, or one inline.")
    batch: Batch | None = Field(None, description="Batching: {size, max_wait}.")
    from_: tuple[Ref, ...] | None = Field(
        None,
        alias="from",
        min_length=1,
        max_length=MAX_STAGES,
        description="Input stage ids (default: the previous stage); at least one when given.",
    )
    description: str | None = Field(None, description="Free text, shown in graphs.")

    @field_validator("from_", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("from_")
    @classmethod
    def _each_once(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None:
            twice = sorted({s for s in v if v.count(s) > 1})
            if twice:
                raise ValueError(f"{', '.join(repr(s) for s in twice)} named more than once: name each input once")
        return v


class QuerySpec(_Spec):
    """How `funcpipe query` answers a question from the stored chunks."""

    top_k: Int = Field(5, ge=1, le=1000, description="Chunks retrieved per question.")
    mode: Literal["vector", "keyword", "hybrid"] = Field(
        "vector",
        description="Retrieval: vector (embedding similarity), keyword (full-text BM25) or hybrid "
        "(both, fused by reciprocal rank fusion).",
    )
    adapter: Ref = Field(..., description="Generation adapter name (e.g. extractive, openai, anthropic, ollama).")
    embedder: Ref | None = Field(None, description="Embedding adapter (default: the one the embed stage uses).")
    store: Ref | None = Field(None, description="Vector store adapter (default: the one vector.upsert uses).")
    prompt: str = Field(
        "Answer the question from the context.\n{% for c in chunks %}{{ c.text }}\n{% endfor %}Q: {{ question }}",
        description="Jinja2 template (sandboxed) rendered at run time with `question` and `chunks`.",
    )
    filter: dict[str, Any] | None = Field(None, description="Metadata equality filter on the chunks.")
    policy: PolicyRef | None = Field(
        None, description="Policy for the generation call: a name under `policies:`, or inline."
    )


class OnError(_Spec):
    """What happens to items that fail."""

    mode: Literal["continue", "fail_fast"] = Field(
        "continue",
        description="continue: dead-letter failed items and go on; fail_fast: stop at the first.",
    )
    dead_letter: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        pattern=r"^[^\x00]*$",
        description="Dead-letter JSONL path (default .funcpipe/<name>.dead.jsonl beside the spec).",
    )


class ExecutorSpec(_Spec):
    """Where the run's work happens: this process, or shards across Ray workers (docs/scale-out.md)."""

    kind: Literal["local", "ray"] = Field(
        "local", description="local: one process; ray: source items sharded across Ray workers."
    )
    address: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="ray: the cluster to join (ray://host:10001, or auto); none starts a local instance.",
    )
    workers: Int | None = Field(
        None, ge=1, le=1024, description="ray: how many shards run at once (default: the cluster's CPUs)."
    )

    @model_validator(mode="after")
    def _ray_options_need_ray(self) -> ExecutorSpec:
        if self.kind == "local" and (self.address is not None or self.workers is not None):
            raise ValueError("address and workers apply to kind: ray; write kind: ray, or remove them")
        return self


class PipelineSpec(_Spec):
    """A whole funcpipe document."""

    version: Annotated[Literal[1], BeforeValidator(no_bool)] = Field(
        ..., description="Spec language version; only 1 exists."
    )
    name: Name = Field(..., description="Pipeline name (state and reports are keyed by it).")
    description: str | None = Field(None, description="Free text.")
    params: dict[str, Any] = Field(default_factory=dict, description="Values for {{ params.x }} templates.")
    adapters: dict[Name, dict[str, Any]] = Field(
        default_factory=dict,
        max_length=1_000,
        description="Named adapters: each has a `kind:` and that kind's fields.",
    )
    policies: dict[Name, Policy] = Field(default_factory=dict, max_length=1_000, description="Named policies.")
    stages: tuple[StageSpec, ...] = Field(..., min_length=1, max_length=MAX_STAGES, description="The stages, in order.")
    query: QuerySpec | None = Field(None, description="Question answering for `funcpipe query`.")
    on_error: OnError = Field(default_factory=OnError, description="Failure handling.")
    shutdown_timeout: Duration = Field(30.0, description="Time in-flight work gets to finish after a signal.")
    budget: Budget | None = Field(
        None, description="Limits on the whole run's calls to embedders and generators: requests, tokens, cost."
    )
    executor: ExecutorSpec = Field(
        default_factory=ExecutorSpec, description="Where the work runs: this process, or Ray workers."
    )
