"""The resume key: what defines the outputs of a source's items, hashed.

An item is skipped when its content and its source's key are unchanged; so
the key holds everything that shapes what is written, and nothing else.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from funcpipe.adapters.config import AdapterConfig
from funcpipe.compile._graph import CompiledPipeline, CompiledStage
from funcpipe.core import stable_id

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
        "max_request_tokens",
        "encoding_format",
        # how a store is queried, not what it holds
        "index",
        "exact",
        "distance",
        "rrf_k",
        # kept by the database from the text: an edit is refused by ensure, not redone
        "language",
        # generation only
        "max_tokens",
        "max_tokens_param",
        "temperature",
        "anthropic_version",
        "max_passages",
        "max_chars",
        # what calls cost, and how their tokens are estimated
        "price",
        "chars_per_token",
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


__all__ = [
    "ADAPTER_RESUME_IGNORES",
    "RESUME_KEY_VERSION",
    "adapter_identity",
    "database_identity",
    "resume_key",
    "stage_identity",
]
