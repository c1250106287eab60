"""What the Qdrant, Chroma and LanceDB stores share: one contract, written once.

Each of those stores keeps, beside a chunk's vector, its text, source id,
origin, meta, and a *content hash*: the sha256 of everything a row holds. An
upsert reads the hashes of the ids it is given and writes only the records
whose hash changed, so it returns the rows inserted or changed, as pgvector's
does, and rewriting identical content writes nothing.

Metadata filters are equality on top-level keys holding a scalar (string,
number, boolean); ``true`` is not ``1``, and ``1.0`` is ``1``, as in jsonb.
Each such entry is also stored as a *pair*, the canonical JSON
``["key", value]``, so every store filters with one exact, indexable
"holds all these strings" test. A filter on a list or an object is refused
with ``SERVICE_SPECIFIC`` naming the store (pgvector and memory take those:
jsonb containment).

Vectors are checked before anything is sent (the dimension the store
records, finite values), and a record that fails makes the whole call fail
with ``DB_ERROR``, writing nothing, as pgvector's does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
from array import array
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import import_module
from types import ModuleType
from typing import Any, TypeVar

from funcpipe._redact import redact, redact_dsn
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.errors import RunError
from funcpipe.ports import Embedding, Fingerprint, QueryHit, RetrievalMode, VectorRecord

T = TypeVar("T")

FINGERPRINT_KEY = "funcpipe_embedder"
"""The metadata key under which a collection or table records its embedder's fingerprint."""

RRF_K = 60
"""The constant of reciprocal rank fusion: a hit at rank r (from 1) adds 1 / (RRF_K + r)."""


class ClientCalls:
    """A store client's methods behind one ``call``: awaited (an async client), or in a worker thread (an embedded one).

    An embedded client is not safe across threads, so its calls take ``thread_lock`` one at a time.

    Args:
        target: the client (or collection) whose methods are called.
        thread_lock: None for an async client; else the lock its calls share.
    """

    def __init__(self, target: Any, thread_lock: threading.Lock | None) -> None:
        self.target = target
        self._thread_lock = thread_lock

    async def call(self, method: str, **kwargs: Any) -> Any:
        """Call ``target.method(**kwargs)`` and return what it returns."""
        fn = getattr(self.target, method)
        if self._thread_lock is None:
            return await fn(**kwargs)
        lock = self._thread_lock

        def locked() -> Any:
            with lock:
                return fn(**kwargs)

        return await asyncio.to_thread(locked)


def read_key(resources: Resources, env: str | None, seen: list[str]) -> str | None:
    """The key the variable ``env`` names, read now and added to ``seen`` so that no error shows it."""
    if env is None:
        return None
    value = resources.secret(env).get_secret_value()
    seen.append(value)
    return value


def import_client(module: str, extra: str, store: str) -> ModuleType:
    """Import a store's client library, or fail naming the extra that installs it.

    Raises:
        RunError: if the library is not installed.
    """
    try:
        return import_module(module)
    except ImportError as exc:
        raise RunError(
            f"the {store} store needs the {module.split('.')[0]} package, which is not installed: "
            f"pip install 'funcpipe-runner[{extra}]'"
        ) from exc


def fingerprint_json(fingerprint: Fingerprint) -> str:
    """``fingerprint`` as the JSON a store records."""
    return json.dumps({"kind": fingerprint.kind, "model": fingerprint.model, "dim": fingerprint.dim}, sort_keys=True)


def parse_fingerprint(value: object) -> Fingerprint | None:
    """The fingerprint a store recorded (JSON text or a mapping), or None if it records none."""
    try:
        loaded = json.loads(value) if isinstance(value, str | bytes) else value
        if not isinstance(loaded, Mapping):
            return None
        return Fingerprint(str(loaded["kind"]), str(loaded["model"]), int(loaded["dim"]))
    except (ValueError, KeyError, TypeError):
        return None


def mismatch(what: str, name: str, field: str, stored: Fingerprint | None, configured: Fingerprint) -> ErrInfo:
    """The error for writing to a store whose vectors came from another embedder, naming both.

    Args:
        what: the store's word for its container (``collection``, ``table``).
        name: the container's name.
        field: the config field that names it (``collection``, ``table``).
        stored: the fingerprint it records, or None if it records none.
        configured: the fingerprint of the configured embedder.
    """
    if stored is None:
        msg = (
            f"{what} {name} exists but records no embedder fingerprint (funcpipe did not create it); the "
            f"configured embedder is {configured}. Fix: point the store at another {what} "
            f"(adapters.<store>.{field}), or delete {what} {name} if its rows are disposable"
        )
    else:
        msg = (
            f"{what} {name} holds vectors from embedder {stored}, but the configured embedder is {configured}; "
            f"vectors of different embedders cannot be compared. Fix: point the store at another {what} "
            f"(adapters.<store>.{field}), or delete {what} {name} to re-embed everything"
        )
    return ErrInfo(
        ErrCode.SERVICE_SPECIFIC,
        msg,
        {"stored": str(stored) if stored else None, "configured": str(configured), "table": name},
    )


def unrecorded(what: str, name: str, field: str) -> ErrInfo:
    """The error for a store funcpipe did not create: it records no embedder fingerprint."""
    return ErrInfo(
        ErrCode.SERVICE_SPECIFIC,
        f"{what} {name} exists but records no embedder fingerprint (funcpipe did not create it). Fix: point "
        f"the store at another {what} (adapters.<store>.{field})",
        {"stored": None, "table": name},
    )


def not_created(what: str, name: str) -> ErrInfo:
    """The error for reading or writing a store that `ensure` has not created."""
    return ErrInfo(
        ErrCode.DB_ERROR,
        f"{what} {name} does not exist yet: run the ingest pipeline first (its vector.upsert creates it)",
        {"table": name},
    )


def unsupported_mode(store: str, mode: RetrievalMode, why: str) -> ErrInfo:
    """The error for a retrieval mode a store cannot rank by."""
    return ErrInfo(
        ErrCode.SERVICE_SPECIFIC,
        f"the {store} store cannot rank by {mode}: {why}. Use query mode vector, or a store that ranks by {mode}",
        {"store": store, "mode": mode},
    )


def _canonical(value: object) -> object:
    # jsonb compares numbers by value: 1.0 is 1. A bool stays a bool (true is not 1).
    if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
        return int(value)
    return value


def _is_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool)


def pair(key: str, value: object) -> str:
    """The canonical JSON ``[key, value]`` a store keeps for a scalar metadata entry."""
    return json.dumps([key, _canonical(value)], ensure_ascii=False, separators=(",", ":"))


def pairs(meta: Mapping[str, object]) -> list[str]:
    """The pairs of the scalar top-level entries of ``meta``, sorted."""
    return sorted(pair(str(k), v) for k, v in meta.items() if _is_scalar(v))


def filter_pairs(store: str, filter: Mapping[str, object] | None) -> Result[list[str], ErrInfo]:
    """The pairs a row must hold to match ``filter``, or the error for a filter the store cannot apply."""
    if not filter:
        return Ok([])
    for key, value in filter.items():
        if not _is_scalar(value):
            return Err(
                ErrInfo(
                    ErrCode.SERVICE_SPECIFIC,
                    f"the {store} store filters on metadata equality with a string, number or boolean, but "
                    f"filter key {key!r} holds {type(value).__name__} {value!r}. Fix: filter on a scalar "
                    "entry, or use pgvector or memory, which match lists and objects by containment",
                    {"store": store, "key": str(key)},
                )
            )
    return Ok(sorted(pair(str(k), v) for k, v in filter.items()))


def meta_text(meta: Mapping[str, object]) -> str:
    """``meta`` as the JSON text a store keeps (keys sorted; what JSON cannot hold becomes text)."""
    return json.dumps(dict(meta), default=str, ensure_ascii=False, sort_keys=True)


def load_meta(text: object) -> dict[str, object]:
    """The meta a store kept with `meta_text`."""
    try:
        loaded = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return {}
    return dict(loaded) if isinstance(loaded, Mapping) else {}


def content_hash(record: VectorRecord, meta: str, vector: Sequence[float]) -> str:
    """The sha256 of everything a row holds: equal hashes mean rewriting the row changes nothing."""
    h = hashlib.sha256()
    for part in (record.source_id, record.origin, record.text, meta):
        encoded = part.encode("utf-8", "surrogatepass")
        h.update(len(encoded).to_bytes(8, "big"))
        h.update(encoded)
    h.update(array("f", vector).tobytes())
    return h.hexdigest()


def unit(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to length 1 (a zero vector stays zero: it has no direction)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [float(x) / norm for x in vector] if norm > 0 else [0.0] * len(vector)


def is_zero(vector: Sequence[float]) -> bool:
    """Whether ``vector`` has no direction (every component zero)."""
    return not any(vector)


def _strings(value: object, path: str) -> list[tuple[str, str]]:
    """Every string in a JSON-like value (keys included), with its dotted path."""
    if isinstance(value, str):
        return [(path, value)]
    found: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            found.append((f"{path} key", str(k)))
            found.extend(_strings(v, f"{path}.{k}"))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found.extend(_strings(v, f"{path}[{i}]"))
    return found


def unencodable(record: VectorRecord) -> ErrInfo | None:
    """``BAD_INPUT`` for a record holding a lone surrogate, which no store can encode as UTF-8; else None.

    Such a record fails alone, naming its field and the offset, instead of
    failing its whole batch with the client's raw error.
    """
    fields = [("id", record.id), ("source_id", record.source_id), ("text", record.text)]
    for field, text in fields + _strings(record.meta, "meta"):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            char = f"U+{ord(text[exc.start]):04X}"
            return ErrInfo(
                ErrCode.BAD_INPUT,
                f"record {record.id}: {field} holds {char} (a lone surrogate) at offset {exc.start}, which cannot "
                "be encoded as UTF-8; remove it upstream: a text.clean stage drops lone surrogates from the text "
                "and the meta",
                {"record": record.id, "field": field, "offset": exc.start, "char": char},
            )
    return None


def checked(records: Sequence[VectorRecord], dim: int) -> Result[dict[str, VectorRecord], ErrInfo]:
    """The last record of each id, or the error for the first the store cannot hold, before anything is sent.

    A wrong dimension or a non-finite value is ``DB_ERROR`` (as pgvector
    says); a lone surrogate is ``BAD_INPUT`` (see `unencodable`).
    """
    latest = {r.id: r for r in records}
    for r in latest.values():
        refused = unencodable(r)
        if refused is not None:
            return Err(refused)
        if len(r.embedding) != dim:
            return Err(
                ErrInfo(
                    ErrCode.DB_ERROR,
                    f"record {r.id}: expected {dim} dimensions, not {len(r.embedding)}",
                    {"record": r.id, "expected": dim, "got": len(r.embedding)},
                )
            )
        if not all(math.isfinite(x) for x in r.embedding):
            return Err(ErrInfo(ErrCode.DB_ERROR, f"record {r.id}: NaN or infinite values are not allowed in a vector"))
    return Ok(latest)


def check_query(vector: Embedding, dim: int) -> ErrInfo | None:
    """``DB_ERROR`` for a query vector of the wrong dimension, else None."""
    if len(vector) != dim:
        return ErrInfo(ErrCode.DB_ERROR, f"different vector dimensions {dim} and {len(vector)}")
    return None


def ranked(hits: Sequence[QueryHit], top_k: int) -> list[QueryHit]:
    """``hits`` best first, ties by id, at most ``top_k``."""
    return sorted(hits, key=lambda h: (-h.score, h.id))[:top_k]


def fuse(rankings: Sequence[Sequence[QueryHit]], top_k: int) -> list[QueryHit]:
    """Reciprocal rank fusion: each hit scores the sum of ``1 / (RRF_K + rank)`` over the rankings."""
    scores: dict[str, float] = {}
    first: dict[str, QueryHit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (RRF_K + rank)
            first.setdefault(hit.id, hit)
    fused = [QueryHit(h.id, h.source_id, h.text, scores[h.id], h.meta) for h in first.values()]
    return ranked(fused, top_k)


def shown(url: str) -> str:
    """``url`` fit for a message: a password written in it is masked."""
    return redact_dsn(url)


def redacted(info: ErrInfo, secrets: Sequence[str]) -> ErrInfo:
    """``info`` with the store's key, URL passwords and credential shapes hidden from its text."""

    def clean(text: str) -> str:
        return redact(redact_dsn(text), secrets)

    meta = {k: clean(v) if isinstance(v, str) else v for k, v in info.meta.items()}
    return ErrInfo(info.code, clean(info.msg), meta)


def guarded(
    describe: Callable[[BaseException, str], ErrInfo],
    doing: str,
    body: Callable[[], Awaitable[Result[T, ErrInfo]]],
    timeout: float | None = None,
) -> AsyncPlan[T]:
    """A plan running ``body`` that turns what the client raises into an `ErrInfo` (``describe``).

    With ``timeout`` (a server's stores), the call fails as ``TIMEOUT`` after
    that many seconds: some clients set no timeout of their own, and others
    cannot tell a timeout from a dropped connection.
    """

    async def run() -> Result[T, ErrInfo]:
        try:
            if timeout is None:
                return await body()
            return await asyncio.wait_for(body(), timeout)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return Err(ErrInfo(ErrCode.TIMEOUT, f"{doing}: no answer within {timeout:g}s", {"timeout": timeout}))
        except Exception as exc:
            return Err(describe(exc, doing))

    return run


__all__ = [
    "FINGERPRINT_KEY",
    "RRF_K",
    "check_query",
    "checked",
    "content_hash",
    "filter_pairs",
    "fingerprint_json",
    "fuse",
    "guarded",
    "import_client",
    "is_zero",
    "load_meta",
    "meta_text",
    "mismatch",
    "not_created",
    "pair",
    "pairs",
    "parse_fingerprint",
    "ranked",
    "redacted",
    "shown",
    "unit",
    "unencodable",
    "unrecorded",
    "unsupported_mode",
]
