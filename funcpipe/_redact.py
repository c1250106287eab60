"""The one place that decides what a secret looks like and how it is hidden.

Three callers share it, at three layers:

- the HTTP adapters (`funcpipe.adapters.http`) hide the key they sent and
  anything shaped like a credential in what a provider answers;
- the runner (`funcpipe.run.redact.Redactor`) hides every secret value the
  run knows in what it writes: dead letters, the report, logs, notices;
- the resources (`funcpipe.run.resources`) mask the password of a DSN in
  connection errors.

Stdlib only, so that every layer may import it. Text is always redacted
*before* it is cut to an excerpt: a cut first could split a secret so that
its first half no longer matches, and would then leak.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

REDACTED = "[REDACTED]"
"""What a hidden value is replaced by."""

MIN_SECRET = 6
"""Shorter values are not hidden: no one issues such keys, and hiding every
``abc`` would make messages unreadable."""

# At least 8 characters, so prose such as "Bearer auth" or "a basic error" is kept.
_BEARER = re.compile(r"(?i)\b(bearer\s+[A-Za-z0-9._~+/=*:-]{8,}|basic\s+[A-Za-z0-9+/]{8,}={0,2})")
# Provider key shapes (OpenAI sk-/sk-proj-, Anthropic sk-ant-, ...), masked or not.
_KEYLIKE = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_*-]{8,}")
_HEADER_KEY = re.compile(r"(?i)\b(x-api-key|api[-_]?key|authorization)(\s*[:=]\s*)(?:(?:bearer|basic)\s+)?[^\s,;\"']+")
# The password of a DSN: ``scheme://user:PASSWORD@host`` and ``password=PASSWORD``.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#\s]*:)([^@/?#\s]+)@")
_PARAM_PASSWORD = re.compile(r"(?i)(\bpassword=)([^&#\s]+)")
_DSN_MASK = "***"


def secret_values(values: Iterable[str]) -> tuple[str, ...]:
    """The values worth hiding: at least `MIN_SECRET` long, deduplicated, longest first.

    Longest first, so that a secret containing another is hidden whole rather
    than leaving the rest of the longer one behind.
    """
    return tuple(sorted({v for v in values if len(v) >= MIN_SECRET}, key=lambda v: (-len(v), v)))


def redact(text: str, secrets: Iterable[str] = (), *, shapes: bool = True) -> str:
    """``text`` with every secret value, and anything shaped like a credential, replaced.

    Args:
        text: any string that may leave funcpipe (messages, provider bodies, records).
        secrets: exact values to hide, such as an API key read for this run;
            values shorter than `MIN_SECRET` are skipped.
        shapes: also hide what looks like a credential whatever its value:
            bearer and basic tokens, ``sk-``/``rk-``/``pk-`` keys and
            ``api-key: ...`` or ``authorization=...`` assignments. The HTTP
            layer wants this for what a provider says; the runner, which knows
            every value it must hide, does not.
    """
    return Redaction(secrets, shapes=shapes)(text)


def dsn_passwords(text: str) -> set[str]:
    """The DSN passwords written in ``text``, both as written and URL-decoded."""
    found: set[str] = set()
    for pattern in (_URL_PASSWORD, _PARAM_PASSWORD):
        for m in pattern.finditer(text):
            found.update({m.group(2), unquote(m.group(2))})
    return found


def redact_dsn(text: str) -> str:
    """``text`` with the password of every DSN in it replaced by ``***``, fit for messages and logs."""
    text = _URL_PASSWORD.sub(rf"\g<1>{_DSN_MASK}@", text)
    return _PARAM_PASSWORD.sub(rf"\g<1>{_DSN_MASK}", text)


class Redaction:
    """A reusable `redact`: the secrets are sorted once, then applied to any number of texts.

    Args:
        secrets: the values to hide; those shorter than `MIN_SECRET` are ignored.
        shapes: also hide credential shapes (see `redact`).
    """

    def __init__(self, secrets: Iterable[str], *, shapes: bool) -> None:
        self.secrets: tuple[str, ...] = secret_values(secrets)
        self.shapes = shapes

    def __call__(self, text: str) -> str:
        """``text`` with every known secret (and, with ``shapes``, every credential shape) replaced."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if self.shapes:
            # After the known values: a shape matching inside a longer known
            # secret would otherwise leave the rest of that secret behind.
            text = _HEADER_KEY.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
            text = _BEARER.sub(lambda m: f"{m.group(1).split()[0]} {REDACTED}", text)
            text = _KEYLIKE.sub(REDACTED, text)
        return text

    def scrub(self, value: object) -> object:
        """A copy of a JSON-like ``value`` (dicts, lists, strings...) with every string redacted."""
        if not self.secrets and not self.shapes:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {self(k) if isinstance(k, str) else k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value


__all__ = ["MIN_SECRET", "REDACTED", "Redaction", "dsn_passwords", "redact", "redact_dsn", "secret_values"]
