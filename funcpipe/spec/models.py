"""Pydantic models of the spec document (``version: 1``).

Adapter fields and stage ``with:`` blocks are kept as plain mappings here and
validated against the registry's config models in a second pass (see
``funcpipe.spec._checks``), so that kinds registered by plugins validate the
same way as built-ins.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from funcpipe.policy.models import Batch, Duration, Policy

_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"


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

    id: str = Field(..., pattern=_ID_PATTERN, description="Unique stage id, used by `from:` and in reports.")
    use: str = Field(..., description="Stage kind (e.g. text.chunk) or a callable's import path module:attr.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="The stage kind's settings.")
    adapter: str | None = Field(None, description="Name of an adapter under `adapters:`.")
    policy: PolicyRef | None = Field(None, description="Name of a policy under `policies:`, or one inline.")
    batch: Batch | None = Field(None, description="Batching: {size, max_wait}.")
    from_: tuple[str, ...] | None = Field(
        None, alias="from", description="Input stage ids (default: the previous stage)."
    )
    description: str | None = Field(None, description="Free text, shown in graphs.")

    @field_validator("from_", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


class QuerySpec(_Spec):
    """How `funcpipe query` answers a question from the stored chunks."""

    top_k: int = Field(5, ge=1, le=1000, description="Chunks retrieved per question.")
    adapter: str = Field(..., description="Generation adapter name (e.g. extractive, openai, anthropic, ollama).")
    embedder: str | None = Field(None, description="Embedding adapter (default: the one the embed stage uses).")
    store: str | None = Field(None, description="Vector store adapter (default: the one vector.upsert uses).")
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
        description="Dead-letter JSONL path (default .funcpipe/<name>.dead.jsonl beside the spec).",
    )


class PipelineSpec(_Spec):
    """A whole funcpipe document."""

    version: Literal[1] = Field(..., description="Spec language version; only 1 exists.")
    name: str = Field(..., pattern=_ID_PATTERN, description="Pipeline name (state and reports are keyed by it).")
    description: str | None = Field(None, description="Free text.")
    params: dict[str, Any] = Field(default_factory=dict, description="Values for {{ params.x }} templates.")
    adapters: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named adapters: each has a `kind:` and that kind's fields.",
    )
    policies: dict[str, Policy] = Field(default_factory=dict, description="Named policies.")
    stages: tuple[StageSpec, ...] = Field(..., min_length=1, description="The stages, in order.")
    query: QuerySpec | None = Field(None, description="Question answering for `funcpipe query`.")
    on_error: OnError = Field(default_factory=OnError, description="Failure handling.")
    shutdown_timeout: Duration = Field(30.0, description="Time in-flight work gets to finish after a signal.")
