"""``${VAR}`` and ``${VAR:-default}`` interpolation of string values at load time.

``$${`` writes a literal ``${``. Fields whose name ends in ``_env`` hold the
*name* of an environment variable (a secret's, typically): they are never
interpolated, and their values are never read here.

Linting (``funcpipe validate`` without ``--check-env``) runs where the secrets
and the deploy environment are absent. There an unset variable stands for an
unknown value: `UnknownValues` puts a unique placeholder in its place, and
every error about a value holding a placeholder is dropped, since it says
nothing about the spec, only about the value it was given.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from funcpipe.adapters.config import env_fields
from funcpipe.errors import SpecError
from funcpipe.spec._paths import Path, format_path
from funcpipe.spec._yaml import Document, walk_strings

_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_REFERENCE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""What an environment variable name looks like."""

_SYNTAX_HINT = "write ${NAME} or ${NAME:-default}; write $${ for a literal ${"


def is_env_field(path: Path) -> bool:
    """True if ``path`` ends at a field naming an environment variable (``*_env``)."""
    return bool(path) and isinstance(path[-1], str) and path[-1].endswith("_env")


class _Unresolved(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UnknownValues:
    """Placeholders for the unset variables of a spec being linted, and the names seen.

    A placeholder holds a random token, so no value written in a spec can be
    mistaken for one.
    """

    def __init__(self) -> None:
        self._token = secrets.token_hex(8)
        self.names: list[str] = []
        """The unset variables, in the order first met."""

    def placeholder(self, name: str) -> str:
        """The stand-in value of the unset variable ``name``."""
        if name not in self.names:
            self.names.append(name)
        return f"\x00unset:{name}:{self._token}\x00"

    def holds(self, text: str) -> bool:
        """True if ``text`` contains a placeholder."""
        return self._token in text

    def independent(self, doc: Document, errors: Sequence[SpecError]) -> list[SpecError]:
        """The ``errors`` that do not depend on an unknown value.

        An error depends on one when it is about a value (as interpolated and
        rendered) holding a placeholder, or when its text quotes one.
        """
        unknown = {format_path(path) for path, value in walk_strings(doc.data) if self.holds(value)}
        return [
            e for e in errors if e.path not in unknown and not self.holds(e.message) and not self.holds(e.hint or "")
        ]


def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    """Replace every ``${VAR}``, ``${VAR:-default}`` and ``$${`` in ``text``.

    Raises:
        ValueError: an unset variable without default, or a malformed reference.
    """
    try:
        return _interpolate(text, env)
    except _Unresolved as exc:
        raise ValueError(exc.message) from None


def _interpolate(text: str, env: Mapping[str, str], unknown: UnknownValues | None = None) -> str:
    def replace(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "$${":
            return "${"
        inner = m.group(1)
        ref = _REFERENCE.match(inner) if inner is not None else None
        if ref is None:
            shown = token if inner is not None else text[m.start() : m.start() + 20]
            raise _Unresolved(f"malformed variable reference {shown!r}", _SYNTAX_HINT)
        name, default = ref.group(1), ref.group(2)
        value = env.get(name)
        if value is not None and (value != "" or default is None):
            return value
        if default is not None:
            return default
        if unknown is not None:
            return unknown.placeholder(name)
        raise _Unresolved(
            f"environment variable {name} is not set and ${{{name}}} has no default",
            f"set {name}, or give a default: ${{{name}:-value}}",
        )

    return _TOKEN.sub(replace, text)


def interpolate_document(
    doc: Document, env: Mapping[str, str], unknown: UnknownValues | None = None
) -> list[SpecError]:
    """Interpolate every string value of ``doc`` in place; return the errors found.

    The text as written is remembered in ``doc.written`` for every rewritten
    value, so errors never show what came from the environment.

    Args:
        doc: the parsed document.
        env: the variables.
        unknown: when given, an unset variable without default is not an
            error: its placeholder is written instead (linting).
    """
    errors: list[SpecError] = []
    for path, value in list(walk_strings(doc.data)):
        if is_env_field(path):
            errors.extend(_check_env_name(doc, path, value))
            continue
        if "${" not in value:
            continue
        try:
            new = _interpolate(value, env, unknown)
        except _Unresolved as exc:
            errors.append(doc.error(path, exc.message, hint=exc.hint))
            continue
        if new != value:
            doc.written.setdefault(path, value)
            _assign(doc.data, path, new)
    return errors


def _check_env_name(doc: Document, path: Path, value: str) -> list[SpecError]:
    field = path[-1]
    if "${" in value:
        return [
            doc.error(
                path,
                f"{field} names an environment variable; it is not interpolated",
                hint=f"write the variable's name, e.g. `{field}: OPENAI_API_KEY`, not ${{...}}",
            )
        ]
    if not ENV_NAME.match(value):
        # The value may be a pasted secret: it is deliberately not shown.
        return [
            doc.error(
                path,
                f"{field} must be the name of an environment variable (letters, digits and _); "
                "the value is not shown in case it is a secret",
                hint=f"put the secret in the environment and name it: `{field}: OPENAI_API_KEY`",
            )
        ]
    return []


def _assign(data: Any, path: Path, value: object) -> None:
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def unset_env_fields(doc: Document, adapters: Mapping[str, BaseModel], env: Mapping[str, str]) -> list[SpecError]:
    """An error for every variable an adapter reads at run time (``*_env``) that is unset or empty.

    Each is located at the ``*_env`` field when the spec writes it, else at
    the adapter, whose default names the variable. Values are never shown.
    """
    errors: list[SpecError] = []
    for name, config in adapters.items():
        kind = getattr(config, "kind", "?")
        for field, variable in env_fields(config):
            if env.get(variable):
                continue
            path: Path = ("adapters", name, field)
            written = path in doc.places
            if not written:
                path = ("adapters", name)
            which = f"its {field}" if written else f"the default {field} of {kind}"
            errors.append(
                doc.error(
                    path,
                    f"adapter {name!r} ({kind}) reads {variable} ({which}), which is not set or empty",
                    hint=f"set {variable} in this environment; or set {field} to the variable that holds "
                    f"the value (`{field}: null` if the service needs none)",
                )
            )
    return errors
