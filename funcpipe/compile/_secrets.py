"""Where a pipeline's secrets are: the variables its ``*_env`` fields name, and its DSN passwords.

The compiler finds them once; the runner's redactor reads the variables'
values at run time and hides them, and the passwords, in whatever it writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from pydantic import BaseModel

from funcpipe._redact import dsn_passwords


@dataclass(frozen=True)
class SecretSources:
    """What the redactor of a run needs to know, found in the spec and its configs.

    Attributes:
        env_names: the environment variables named by ``*_env`` fields (their
            values are secrets, read at run time).
        passwords: the passwords written in DSNs (``scheme://user:password@...``
            and ``password=...``), as written and URL-decoded.
    """

    env_names: tuple[str, ...] = ()
    passwords: tuple[str, ...] = ()

    def values(self, environ: Mapping[str, str]) -> set[str]:
        """The secrets themselves: the passwords and the set values of the variables."""
        found = set(self.passwords)
        found.update(v for name in self.env_names if (v := environ.get(name)))
        return found


def secret_sources(trees: Iterable[object]) -> SecretSources:
    """The `SecretSources` of config trees (models, dicts, lists)."""
    names: set[str] = set()
    passwords: set[str] = set()
    for key, value in _leaves(trees):
        if not isinstance(value, str):
            continue
        if key is not None and key.endswith("_env"):
            names.add(value)
            continue
        passwords.update(dsn_passwords(value))
    return SecretSources(tuple(sorted(names)), tuple(sorted(passwords)))


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


__all__ = ["SecretSources", "secret_sources"]
