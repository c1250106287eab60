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

How a value is hidden is decided in `funcpipe._redact`, shared with the HTTP
adapters; this module only works out which values a run knows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from funcpipe._redact import MIN_SECRET, REDACTED, Redaction
from funcpipe.compile import CompiledPipeline, secret_sources


class Redactor(Redaction):
    """Replaces known secret values by ``[REDACTED]`` in text and in JSON-like values.

    Only the values it knows: unlike the HTTP layer it does not guess at
    credential shapes, so user data that merely looks like a key is kept.

    Args:
        secrets: the values to hide; those shorter than `MIN_SECRET` are ignored.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(secrets, shapes=False)

    @classmethod
    def for_pipeline(cls, pipeline: CompiledPipeline, environ: Mapping[str, str] | None = None) -> Redactor:
        """The redactor of a run of ``pipeline``: its ``*_env`` values and DSN passwords.

        Args:
            pipeline: the compiled pipeline (adapter and stage configs, with their defaults).
            environ: where ``*_env`` variables are read (``os.environ`` by default).
        """
        env = os.environ if environ is None else environ
        return cls(pipeline.secrets.values(env))


def secrets_in(trees: Iterable[object], environ: Mapping[str, str]) -> set[str]:
    """The secrets found in config trees (models, dicts, lists).

    Those are the values in ``environ`` of the variables named by ``*_env``
    keys, and the passwords of DSNs (``scheme://user:password@...`` and
    ``password=...``), both as written and URL-decoded.
    """
    return secret_sources(trees).values(environ)


__all__ = ["MIN_SECRET", "REDACTED", "Redactor", "secrets_in"]
