"""Pydantic models of a pipeline test file (``*.test.yaml``, ``version: 1``).

A test file names its spec and holds tests. Each test declares the inputs of
the spec's sources, its overrides (adapters, ``--set`` values, params,
variables) and what it expects: per stage, of the dead letters, of the
report, of the policies' behaviour and of queries. Every model is frozen and
rejects unknown keys, so a mistyped key is a located error with a "did you
mean" hint, never an expectation silently skipped.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from funcpipe.policy.models import Duration, Int, PositiveDuration, no_bool

JSONValue = Any
"""Any value YAML can hold: what items, reports and overrides are made of."""

BreakerState = Literal["open", "half_open", "closed"]
"""A circuit breaker's state, as its ``breaker`` events name it."""

_FIELD = re.compile(r"^(id|source_id|data|meta|text|score)(\.[^.\s]+)*$")


def _field_path(value: str) -> str:
    if not _FIELD.match(value):
        raise ValueError(
            f"{value!r} is not a field path: start with id, source_id, data or meta (items), "
            "or text, score (query hits), then .key or .0 for a list index, e.g. meta.path"
        )
    return value


FieldPath = Annotated[str, AfterValidator(_field_path)]
"""A field of an item (``data``, ``data.text``, ``meta.path``) or of a query hit (``text``, ``meta.section``)."""

Count = Annotated[int, BeforeValidator(no_bool), Field(ge=0, le=10_000_000)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Condition(_Model):
    """What one field of every item must satisfy; every condition given must hold.

    A number compares as a number; ``contains`` finds a substring in text,
    an element in a list, a key in a mapping.
    """

    equals: JSONValue = Field(None, description="The field equals this value.")
    not_equals: JSONValue = Field(None, description="The field does not equal this value.")
    contains: JSONValue = Field(None, description="Substring of text, element of a list, key of a mapping.")
    matches: str | None = Field(None, description="A regular expression the text matches (re.search).")
    one_of: list[JSONValue] | None = Field(None, description="The field equals one of these values.")
    min_length: Count | None = Field(None, description="Length of text, list or mapping at least this.")
    max_length: Count | None = Field(None, description="Length of text, list or mapping at most this.")
    gt: float | None = Field(None, description="A number greater than this.")
    gte: float | None = Field(None, description="A number at least this.")
    lt: float | None = Field(None, description="A number less than this.")
    lte: float | None = Field(None, description="A number at most this.")
    exists: bool | None = Field(None, description="true: the field is present; false: it is absent.")

    @field_validator("matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("a condition needs at least one of: " + ", ".join(type(self).model_fields))
        return self


class StageExpect(_Model):
    """What a stage must have emitted.

    Items are compared in their JSON form ``{id, source_id, data, meta}``.
    """

    count: Count | None = Field(None, description="Exactly this many items.")
    items: list[JSONValue] | None = Field(
        None, description="Exactly these items' data, in any order (a snapshot `--update` rewrites)."
    )
    contains: list[JSONValue] | None = Field(
        None,
        description="Each entry matches some item: mappings match a subset of the item's keys, "
        "recursively ({data: ..., meta: {path: a.md}}).",
    )
    where: dict[FieldPath, Condition] | None = Field(
        None, description="Field conditions every item satisfies: {meta.path: {matches: '\\.md$'}}."
    )


class DeadLetterExpect(_Model):
    """Dead letters of one stage with one error code."""

    stage: str = Field(..., description="The stage that dead-lettered them.")
    code: str = Field(..., description="Their error code (RATE_LIMIT, TRANSIENT, BAD_INPUT...).")
    count: Count = Field(1, description="How many.")
    message: str | None = Field(None, description="Text every one's error message contains.")


class PolicyExpect(_Model):
    """How a stage's policy behaved, from its events."""

    attempts: Count | None = Field(None, description="Calls attempted, retries included.")
    retries: Count | None = Field(None, description="Attempts after the first of a call.")
    waits: list[Duration] | None = Field(None, description="Every backoff wait, in order (a snapshot).")
    waited: Duration | None = Field(None, description="The waits' total.")
    failures: dict[str, Count] | None = Field(None, description="Failed attempts by error code: {RATE_LIMIT: 2}.")
    breaker: list[BreakerState] | None = Field(
        None, description="The breaker's transitions, in order: [open, half_open, closed]."
    )
    limited: Count | None = Field(None, description="Times the rate limiter made a call wait.")


class TextExpect(_Model):
    """What a text (an answer) must be."""

    equals: str | None = Field(None, description="Exactly this text.")
    contains: list[str] | None = Field(None, description="Texts it contains.")
    matches: str | None = Field(None, description="A regular expression it matches (re.search).")

    @field_validator("contains", mode="before")
    @classmethod
    def _one(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class HitsExpect(_Model):
    """What a query retrieved, compared in the JSON form ``{id, source_id, text, score, meta}``."""

    count: Count | None = Field(None, description="Exactly this many hits.")
    sources: list[str] | None = Field(None, description="The hits' meta.path (else source_id), best first.")
    contains: list[JSONValue] | None = Field(None, description="Each entry matches some hit (subset of keys).")
    where: dict[FieldPath, Condition] | None = Field(None, description="Field conditions every hit satisfies.")


class QueryExpect(_Model):
    """A question asked after the run, and what it must return."""

    question: str = Field(..., min_length=1, description="The question.")
    top_k: Annotated[Int, Field(ge=1, le=1000)] | None = Field(
        None, description="Chunks to retrieve (default: the spec's)."
    )
    hits: HitsExpect | None = Field(None, description="What is retrieved.")
    answer: TextExpect | None = Field(None, description="What is answered.")
    error: str | None = Field(None, description="The query must fail, with a message containing this.")


class Expect(_Model):
    """Everything a test checks after its run."""

    stages: dict[str, StageExpect] = Field(default_factory=dict, description="By stage id: what it emitted.")
    dead_letters: list[DeadLetterExpect] | None = Field(
        None, description="Exactly these dead letters, grouped by stage and code ([] for none)."
    )
    report: dict[str, JSONValue] | None = Field(
        None,
        description="A subset of the run's JSON report: "
        "{status: ok, accounting: {done: 3}, stages: {chunk: {outputs: 5}}}.",
    )
    policy: dict[str, PolicyExpect] = Field(default_factory=dict, description="By stage id: how its policy behaved.")
    query: list[QueryExpect] = Field(default_factory=list, description="Questions asked after the run.")


class Input(_Model):
    """What a source stage reads: its ``with.path`` is pointed at it. Give exactly one form."""

    files: dict[str, str] | None = Field(
        None, description="Files written into a fresh directory, by relative name: {README.md: '# Title'}."
    )
    lines: list[JSONValue] | None = Field(None, description="Records written as a JSON Lines file, one per entry.")
    path: str | None = Field(None, description="A fixture file or directory, relative to the test file.")

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        given = [name for name in ("files", "lines", "path") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of files, lines or path, not {', '.join(given) or 'none'}")
        return self

    @field_validator("files")
    @classmethod
    def _relative(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            parts = name.replace("\\", "/").split("/")
            if not name or name.startswith("/") or ".." in parts or "" in parts:
                raise ValueError(f"file name {name!r} must be a relative path inside the input directory")
        return value


Overrides = dict[str, JSONValue]
"""``--set`` overrides: key paths (``stages[2].with.size``) to values."""

AdapterOverride = dict[str, JSONValue]
"""An adapter's whole config, replacing the spec's: ``{kind: hashing, dim: 64}``."""


class PipelineTest(_Model):
    """One test: a run of the spec with these inputs and overrides, and what it must give."""

    name: str = Field(..., min_length=1, max_length=200, description="What the test shows.")
    description: str | None = Field(None, description="More about it.")
    inputs: dict[str, Input] = Field(default_factory=dict, description="By source stage id: what it reads.")
    adapters: dict[str, AdapterOverride] = Field(
        default_factory=dict,
        description="By adapter name: a local kind (hashing, memory, extractive) or a scripted fake "
        "({kind: scripted, script: [429, ok]}) replacing the spec's.",
    )
    set: Overrides = Field(default_factory=dict, description="--set overrides: {stages[2].with.size: 400}.")
    params: dict[str, JSONValue] = Field(default_factory=dict, description="Values merged into the spec's params.")
    env: dict[str, str] = Field(default_factory=dict, description="Variables ${VAR} reads, over the environment.")
    seed: Int = Field(0, description="Seed of jitter and sampling.")
    timeout: PositiveDuration = Field(
        3600.0, description="Virtual time the run may take; a run still going then fails the test."
    )
    expect: Expect = Field(default_factory=Expect, description="What the run must give.")


class TestFile(_Model):
    """A pipeline test file: the spec it tests, what every test shares, and the tests."""

    __test__ = False  # not a pytest test class

    version: Literal[1] = Field(1, description="The test file format's version.")
    spec: str = Field(..., min_length=1, description="The spec file, relative to this file.")
    adapters: dict[str, AdapterOverride] = Field(default_factory=dict, description="Adapter overrides of every test.")
    set: Overrides = Field(default_factory=dict, description="--set overrides of every test.")
    env: dict[str, str] = Field(default_factory=dict, description="Variables of every test.")
    tests: list[PipelineTest] = Field(..., min_length=1, description="The tests.")

    @field_validator("tests")
    @classmethod
    def _unique(cls, tests: list[PipelineTest]) -> list[PipelineTest]:
        seen: set[str] = set()
        for t in tests:
            if t.name in seen:
                raise ValueError(f"two tests are named {t.name!r}; give each its own name")
            seen.add(t.name)
        return tests


__all__ = [
    "BreakerState",
    "Condition",
    "DeadLetterExpect",
    "Expect",
    "FieldPath",
    "HitsExpect",
    "Input",
    "PipelineTest",
    "PolicyExpect",
    "QueryExpect",
    "StageExpect",
    "TestFile",
    "TextExpect",
]
