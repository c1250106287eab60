"""Sandboxed Jinja2 templates: ``{{ params.x }}`` at load time, prompts at run time.

Every template is compiled in an immutable sandbox with ``StrictUndefined``
and no globals: a template sees only the variables it is given, cannot reach
private attributes (``''.__class__``, ``cycler.__init__.__globals__``), cannot
mutate what it is given, and cannot build huge values: ``**``, ``*``, ``+``,
``%``, ``~``, widths and string methods are checked before they compute, and
a rendering takes a bounded number of steps (loop iterations and calls).
Private attribute access is refused when the template is compiled, so it is
reported at validation even for templates rendered only at run time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from funcpipe.errors import SpecError

MAX_OUTPUT = 1_000_000
"""Characters a template may produce at most; also the largest string or list it may build."""

MAX_STEPS = 200_000
"""Loop iterations, calls and filter applications one rendering may take at most."""

MAX_SOURCE = 100_000
"""Characters a template's source may hold at most."""

_MAX_REPEAT = 100_000
_MAX_EXPONENT = 1_000
_MAX_INT_BITS = 4_096
_MAX_WIDTH = 10_000
# A printf or str.format field's width or precision: `%9999999d`, `{:>9999999}`.
_PRINTF_WIDTH = re.compile(r"%[-#0 +]*(\d*|\*)(?:\.(\d*|\*))?")
_FORMAT_WIDTH = re.compile(r"\{[^{}]*?:[^{}]*?(\d+)")
_NESTED_FIELD = re.compile(r"\{[^{}]*:[^{}]*\{")
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})

_steps: ContextVar[list[int] | None] = ContextVar("funcpipe_template_steps", default=None)


class TemplateError(SpecError):
    """A template that does not compile, or fails or is refused when rendered.

    Attributes:
        lineno: the 1-based line within the template, when known.
    """

    def __init__(self, message: str, *, lineno: int | None = None, hint: str | None = None) -> None:
        self.lineno = lineno
        super().__init__(message, file="<template>", line=lineno or 1, hint=hint)


def _step() -> None:
    budget = _steps.get()
    if budget is None:
        return
    budget[0] += 1
    if budget[0] > MAX_STEPS:
        raise SecurityError(f"the template takes more than {MAX_STEPS} steps (loop iterations and calls)")


def _size(value: object, limit: int = MAX_OUTPUT) -> int:
    """Characters and elements in ``value``, counted until past ``limit``."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple | dict | set | frozenset):
        total = len(value)
        items = value.items() if isinstance(value, dict) else value
        for item in items:
            if total > limit:
                break
            total += _size(item, limit - total)
        return total
    return 1


def _refuse_large(what: str, size: int) -> None:
    if size > MAX_OUTPUT:
        raise SecurityError(f"{what} would build more than {MAX_OUTPUT} characters or elements")


def _check_width(value: object) -> None:
    if isinstance(value, int) and abs(value) > _MAX_WIDTH:
        raise SecurityError(f"a width or count of {value} is too large (at most {_MAX_WIDTH})")


def _check_format_string(fmt: object, printf: bool) -> None:
    if not isinstance(fmt, str):
        return
    pattern = _PRINTF_WIDTH if printf else _FORMAT_WIDTH
    for m in pattern.finditer(fmt):
        for group in m.groups():
            if group and group.isdigit():
                _check_width(int(group))


def _replaced_size(text: str, old: str, new: str, count: int = -1) -> int:
    hits = text.count(old) if old else len(text) + 1
    if count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def _guard_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a built-in filter: count it as a step and refuse results it would make huge."""

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        _step()
        if name in ("center", "indent", "slice"):
            # The first argument is the filtered value; the others are widths and counts.
            for value in (*args[1:], *kwargs.values()):
                _check_width(value)
        if name == "format" and args:
            _check_format_string(args[0], printf=True)
        elif name == "replace" and len(args) >= 3 and all(isinstance(a, str) for a in args[:3]):
            count = args[3] if len(args) > 3 and isinstance(args[3], int) else kwargs.get("count")
            _refuse_large("replace", _replaced_size(args[0], args[1], args[2], count if isinstance(count, int) else -1))
        elif name == "join" and args and isinstance(args[-1 if len(args) > 1 else 0], list | tuple):
            items = args[1] if len(args) > 1 else args[0]
            sep = args[2] if len(args) > 2 else kwargs.get("d", "")
            _refuse_large("join", _size(items) + len(str(sep)) * len(items))
        elif name == "indent" and args and isinstance(args[0], str):
            width = args[1] if len(args) > 1 else kwargs.get("width", 4)
            pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 4
            _refuse_large("indent", len(args[0]) + (args[0].count("\n") + 1) * max(pad, 0))

    # Filters that take the context or environment first keep their marker.
    if getattr(f, "jinja_pass_arg", None) is not None:

        def passing(first: Any, *args: Any, **kwargs: Any) -> Any:
            check(args, kwargs)
            return f(first, *args, **kwargs)

        passing.jinja_pass_arg = f.jinja_pass_arg  # type: ignore[attr-defined]
        return passing

    def plain(*args: Any, **kwargs: Any) -> Any:
        check(args, kwargs)
        return f(*args, **kwargs)

    return plain


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        # Every operand is checked before the operation runs: `2**999**999`
        # or `'x' * 10**9` would take gigabytes before any limit saw the result.
        if operator == "**":
            self._check_power(left, right)
        elif operator == "*":
            self._check_product(left, right)
        elif operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _refuse_large("concatenation", _size(left) + _size(right))
        elif operator == "%" and isinstance(left, str):
            _check_format_string(left, printf=True)
            if "*" in left:
                values = right if isinstance(right, tuple) else (right,)
                for value in values:
                    _check_width(value)
        return super().call_binop(context, operator, left, right)

    @staticmethod
    def _check_power(left: Any, right: Any) -> None:
        if isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponent {right!r} is too large (at most {_MAX_EXPONENT})")
        big = isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
        if big and left.bit_length() * right > _MAX_INT_BITS:
            raise SecurityError(f"the power would have more than {_MAX_INT_BITS} bits")

    @staticmethod
    def _check_product(left: Any, right: Any) -> None:
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise SecurityError(f"the product would have more than {_MAX_INT_BITS} bits")
            return
        sized = next((v for v in (left, right) if isinstance(v, str | list | tuple)), None)
        times = next((v for v in (left, right) if isinstance(v, int)), None)
        if sized is not None and times is not None:
            if len(sized) * times > _MAX_REPEAT:
                raise SecurityError(f"repetition would build more than {_MAX_REPEAT} elements")
            _refuse_large("repetition", _size(sized) * times)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Count the call as a step; refuse string methods that would build huge values."""
        _step()
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in _WIDTH_METHODS:
                for value in (*args, *kwargs.values()):
                    _check_width(value)
            elif name == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
                count = args[2] if len(args) > 2 and isinstance(args[2], int) else -1
                _refuse_large("replace", _replaced_size(owner, args[0], args[1], count))
            elif name == "join" and args and isinstance(args[0], list | tuple):
                _refuse_large("join", _size(args[0]) + len(owner) * len(args[0]))
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Sandbox ``str.format``, refusing huge field widths before formatting."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__
        _check_format_string(fmt, printf=False)
        if not _NESTED_FIELD.search(fmt):
            return wrapped
        # `'{:>{}}'.format(x, 10**9)`: a width given as an argument.

        def checked(*args: Any, **kwargs: Any) -> str:
            for arg in (*args, *kwargs.values()):
                _check_width(arg)
            return wrapped(*args, **kwargs)

        return checked

    def fp_iter(self, iterable: Any) -> Iterator[Any]:
        """A loop's iterable, counting each iteration as a step."""
        for value in iterable:
            _step()
            yield value

    def fp_concat(self, parts: list[Any]) -> str:
        """The ``~`` operator, refusing results longer than `MAX_OUTPUT`."""
        texts = [str(p) for p in parts]
        _refuse_large("concatenation", sum(len(t) for t in texts))
        return "".join(texts)


class _Bound(NodeTransformer):
    """Route loops and ``~`` through the sandbox's counted, size-checked helpers."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(nodes.EnvironmentAttribute("fp_iter"), [node.iter], [], None, None)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(nodes.EnvironmentAttribute("fp_concat"), [nodes.List(node.nodes)], [], None, None)


@lru_cache(maxsize=1)
def _environment() -> _Sandbox:
    env = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.globals.clear()
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
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
    if len(source) > MAX_SOURCE:
        raise TemplateError(
            f"the template is too long ({len(source)} characters; at most {MAX_SOURCE})",
            hint="a template renders a value or a prompt; keep bulk text in files the stages read",
        )
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
    reads = frozenset(meta.find_undeclared_variables(tree))
    bounded = _Bound().visit(tree)
    assert isinstance(bounded, nodes.Template)
    return env.from_string(bounded), reads


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
    token = _steps.set([0])
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
    finally:
        _steps.reset(token)
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


__all__ = [
    "MAX_OUTPUT",
    "MAX_SOURCE",
    "MAX_STEPS",
    "TemplateError",
    "check_template",
    "has_template",
    "render_template",
]
