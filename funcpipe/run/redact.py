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
from collections.abc import Iterable, Mapping

from funcpipe.compile import CompiledPipeline, secret_sources

REDACTED = "[REDACTED]"
MIN_SECRET = 6
"""Shorter values are not hidden: no one issues such keys, and hiding every
``abc`` would make messages unreadable (the same bound as the adapters')."""


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
            pipeline: the compiled pipeline (its `CompiledPipeline.secrets`, found by the compiler).
            environ: where ``*_env`` variables are read (``os.environ`` by default).
        """
        env = os.environ if environ is None else environ
        return cls(pipeline.secrets.values(env))

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
    return secret_sources(trees).values(environ)


__all__ = ["MIN_SECRET", "REDACTED", "Redactor", "secrets_in"]
