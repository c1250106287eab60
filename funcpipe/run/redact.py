"""The secrets a run knows, and their removal from everything the runner writes.

A run knows two kinds of secret: the value of every environment variable a
``*_env`` field names (API keys), and every password written in a DSN (which
usually arrives through ``${DATABASE_URL}``). Adapters already keep them out of
their own messages, but user code and services can still quote them: an
exception that prints the key it was refused, a traceback. So the runner passes
every string it writes (dead letters, the report, JSON logs, notices and error
messages) through one `Redactor`::

    redact = Redactor.for_pipeline(pipeline)
    redact("token sk-live-123456 refused")       # 'token [REDACTED] refused'
    redact.scrub({"error": {"msg": "...", "meta": {...}}})
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import unquote

from pydantic import BaseModel

from funcpipe.compile import CompiledPipeline

REDACTED = "[REDACTED]"
MIN_SECRET = 6
"""Shorter values are not hidden: no one issues such keys, and hiding every
``abc`` would make messages unreadable (the same bound as the adapters')."""

_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#\s]*:([^@/?#\s]+)@")
_QUERY_PASSWORD = re.compile(r"(?i)\bpassword=([^&#\s]+)")


class Redactor:
    """Replaces known secret values by ``[REDACTED]`` in text and in JSON-like values.

    Args:
        secrets: the values to hide; those shorter than `MIN_SECRET` are ignored.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is hidden whole.
        self.secrets: tuple[str, ...] = tuple(
            sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=lambda s: (-len(s), s))
        )

    @classmethod
    def for_pipeline(cls, pipeline: CompiledPipeline, environ: Mapping[str, str] | None = None) -> Redactor:
        """The redactor of a run of ``pipeline``: its ``*_env`` values and DSN passwords.

        Args:
            pipeline: the compiled pipeline (adapter and stage configs, with their defaults).
            environ: where ``*_env`` variables are read (``os.environ`` by default).
        """
        env = os.environ if environ is None else environ
        trees: list[object] = [pipeline.loaded.spec.model_dump(by_alias=True)]
        trees += [a.config for a in pipeline.adapters.values()]
        trees += [s.config for s in pipeline.stages]
        return cls(secrets_in(trees, env))

    def __call__(self, text: str) -> str:
        """``text`` with every known secret replaced."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def scrub(self, value: object) -> object:
        """A copy of a JSON-like ``value`` (dicts, lists, strings...) with every string redacted."""
        if not self.secrets:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {self(k) if isinstance(k, str) else k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value


def secrets_in(trees: Iterable[object], environ: Mapping[str, str]) -> set[str]:
    """The secrets found in config trees (models, dicts, lists).

    Those are the values in ``environ`` of the variables named by ``*_env``
    keys, and the passwords of DSNs (``scheme://user:password@...`` and
    ``password=...``), both as written and URL-decoded.
    """
    found: set[str] = set()
    for key, value in _leaves(trees):
        if not isinstance(value, str):
            continue
        if key is not None and key.endswith("_env"):
            secret = environ.get(value)
            if secret:
                found.add(secret)
            continue
        for pattern in (_URL_PASSWORD, _QUERY_PASSWORD):
            for m in pattern.finditer(value):
                found.update({m.group(1), unquote(m.group(1))})
    return found


def _leaves(trees: Iterable[object]) -> Iterator[tuple[str | None, object]]:
    stack: list[tuple[str | None, object]] = [(None, t) for t in trees]
    while stack:
        key, value = stack.pop()
        if isinstance(value, BaseModel):
            stack.extend((str(k), v) for k, v in value.model_dump(by_alias=True).items())
        elif isinstance(value, Mapping):
            stack.extend((str(k), v) for k, v in value.items())
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend((key, v) for v in value)
        else:
            yield key, value


__all__ = ["MIN_SECRET", "REDACTED", "Redactor", "secrets_in"]
