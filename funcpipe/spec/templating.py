"""Sandboxed Jinja2 templates: ``{{ params.x }}`` at load time, prompts at run time.

Every template is compiled in an immutable sandbox with ``StrictUndefined``
and no globals: a template sees only the variables it is given, cannot reach
private attributes (``''.__class__``, ``cycler.__init__.__globals__``), cannot
mutate what it is given, and cannot build huge values with ``*`` or ``**``.
Private attribute access is refused when the template is compiled, so it is
reported at validation even for templates rendered only at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from funcpipe.errors import SpecError

MAX_OUTPUT = 1_000_000
"""Characters a template may produce at most."""

_MAX_REPEAT = 100_000
_MAX_EXPONENT = 1_000


class TemplateError(SpecError):
    """A template that does not compile, or fails or is refused when rendered.

    Attributes:
        lineno: the 1-based line within the template, when known.
    """

    def __init__(self, message: str, *, lineno: int | None = None, hint: str | None = None) -> None:
        self.lineno = lineno
        super().__init__(message, file="<template>", line=lineno or 1, hint=hint)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponent {right!r} is too large (at most {_MAX_EXPONENT})")
        if operator == "*":
            sized = next((v for v in (left, right) if isinstance(v, str | list | tuple)), None)
            times = next((v for v in (left, right) if isinstance(v, int)), None)
            if sized is not None and times is not None and len(sized) * times > _MAX_REPEAT:
                raise SecurityError(f"repetition would build more than {_MAX_REPEAT} elements")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=1)
def _environment() -> _Sandbox:
    env = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.globals.clear()
    return env


def has_template(text: str) -> bool:
    """True if ``text`` holds Jinja2 markup (``{{``, ``{%`` or ``{#``)."""
    return "{{" in text or "{%" in text or "{#" in text


def _private_access(tree: nodes.Template) -> tuple[list[str], int] | None:
    found: list[tuple[str, int]] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name: object = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            first = node.args[0]
            name = first.value if isinstance(first, nodes.Const) else None
        if isinstance(name, str) and name.startswith("_"):
            found.append((name, node.lineno))
    if not found:
        return None
    # The walk meets `a.b.c` outside in; list the names as they are written.
    names = list(dict.fromkeys(name for name, _ in reversed(found)))
    return names, min(line for _, line in found)


@lru_cache(maxsize=256)
def _compile(source: str) -> tuple[jinja2.Template, frozenset[str]]:
    env = _environment()
    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"template syntax error: {exc.message}",
            lineno=exc.lineno,
            hint="see https://jinja.palletsprojects.com/templates/ for the syntax",
        ) from None
    private = _private_access(tree)
    if private is not None:
        names, lineno = private
        listed = ", ".join(repr(n) for n in names)
        raise TemplateError(
            f"template refused by the sandbox: private attribute{'s' if len(names) > 1 else ''} {listed}",
            lineno=lineno,
            hint="templates may read the values they are given, never private attributes",
        )
    return env.from_string(tree), frozenset(meta.find_undeclared_variables(tree))


def check_template(source: str) -> frozenset[str]:
    """Compile ``source`` in the sandbox and return the variable names it reads.

    Raises:
        TemplateError: a syntax error, or a refused private attribute access.
    """
    return _compile(source)[1]


def render_template(source: str, variables: Mapping[str, object]) -> str:
    """Render ``source`` in the sandbox with ``variables``; undefined names are errors.

    Raises:
        TemplateError: the template does not compile, reads an undefined name,
            is refused by the sandbox, fails, or produces more than
            `MAX_OUTPUT` characters.
    """
    template, _ = _compile(source)
    out: list[str] = []
    size = 0
    try:
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateError(
                    f"template output is longer than {MAX_OUTPUT} characters",
                    hint="a template renders a value or a prompt, not bulk data",
                )
            out.append(chunk)
    except TemplateError:
        raise
    except SecurityError as exc:
        raise TemplateError(
            f"template refused by the sandbox: {exc}",
            lineno=_lineno(exc),
            hint="templates may read the values they are given, nothing else",
        ) from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(
            f"template error: {exc}",
            lineno=_lineno(exc),
            hint=f"the names available here are: {', '.join(sorted(variables)) or 'none'}",
        ) from None
    except Exception as exc:
        # A template is user input: whatever a filter or operator raises
        # (ZeroDivisionError, TypeError...) is the template's error, not ours.
        raise TemplateError(
            f"template failed: {type(exc).__name__}: {exc}",
            lineno=_lineno(exc),
            hint="check the expression's operands and filters",
        ) from None
    return "".join(out)


def _lineno(exc: BaseException) -> int | None:
    lineno = getattr(exc, "lineno", None)
    if isinstance(lineno, int):
        return lineno
    tb = exc.__traceback__
    found: int | None = None
    while tb is not None:
        # Jinja rewrites tracebacks so that a frame named <template> carries
        # the template's own line number.
        if tb.tb_frame.f_code.co_filename == "<template>":
            found = tb.tb_lineno
        tb = tb.tb_next
    return found


__all__ = ["MAX_OUTPUT", "TemplateError", "check_template", "has_template", "render_template"]
