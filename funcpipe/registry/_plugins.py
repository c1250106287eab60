"""Plugin kinds: the entry points of the ``funcpipe.stages`` and ``funcpipe.adapters`` groups.

Each entry point is loaded on its own, and one that cannot be used becomes a
`PluginProblem` instead of an exception: the other plugins still register,
and the problem is reported where it matters, naming the entry point, its
group, its distribution, what went wrong and what to do. An entry point
cannot be used when:

- importing what it names fails (any exception of the plugin's own code);
- it names something other than a kind of its group (a class, a factory, an
  `AdapterKind` in the stages group...);
- its kind's name is not a plain name (a ``:`` reads as an import path);
- its kind would replace a built-in kind, or a kind another plugin
  registered first: neither is replaced, and the plugin's kind is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any, Final, Literal

Group = Literal["funcpipe.stages", "funcpipe.adapters"]

STAGE_GROUP: Final = "funcpipe.stages"
"""The entry-point group of plugin stage kinds (each names a `StageKind`)."""

ADAPTER_GROUP: Final = "funcpipe.adapters"
"""The entry-point group of plugin adapter kinds (each names an `AdapterKind`)."""

_WHAT: dict[str, str] = {STAGE_GROUP: "stage kind", ADAPTER_GROUP: "adapter kind"}

_MAX_REASON = 300


@dataclass(frozen=True)
class PluginProblem:
    """A plugin entry point that cannot be used, and why.

    Attributes:
        group: its entry-point group, ``funcpipe.stages`` or ``funcpipe.adapters``.
        entry_point: the entry point's name (by convention, the kind's name).
        target: what it names, ``module:attribute``.
        distribution: the installed distribution that declares it, with its
            version (``acme-funcpipe 1.2.0``); None if unknown.
        reason: what went wrong, on one line.
        hint: what to do about it.
    """

    group: str
    entry_point: str
    target: str
    distribution: str | None
    reason: str
    hint: str

    @property
    def what(self) -> str:
        """``stage kind`` or ``adapter kind``: what the entry point should provide."""
        return _WHAT[self.group]

    def describe(self) -> str:
        """One line naming the entry point, its group, its distribution and the reason."""
        return f"{_label(self.group, self.entry_point, self.target, self.distribution)}: {self.reason}"


def _label(group: str, name: str, target: str, distribution: str | None) -> str:
    source = f" of {distribution}" if distribution else ""
    return f"plugin entry point {name!r} ({group}{source}, {target})"


def distribution_of(ep: EntryPoint) -> str | None:
    """``name version`` of the distribution declaring ``ep``, or None when it is not known."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    name = dist.metadata["Name"] or "?"
    return f"{name} {dist.version}"


def one_line(exc: BaseException) -> str:
    """``ExceptionType: first line of its message``, cut to a readable length."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def a_name_for(obj: object) -> str:
    """What ``obj`` is, for a message: ``the class Foo``, ``the function bar``, ``an AdapterKind``..."""
    kind = type(obj).__name__
    if isinstance(obj, type):
        return f"the class {obj.__qualname__}"
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"the {'function' if kind == 'function' else kind} {obj.__qualname__}"
    return f"{_article(kind)} {kind}"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _module_of(target: str) -> str:
    return target.split(":", 1)[0].strip()


@dataclass(frozen=True)
class Found:
    """An entry point that loaded, with the object it names."""

    group: Group
    entry_point: EntryPoint
    obj: object

    def problem(self, reason: str, hint: str) -> PluginProblem:
        """A `PluginProblem` about this entry point."""
        ep = self.entry_point
        return PluginProblem(self.group, ep.name, ep.value, distribution_of(ep), reason, hint)

    def label(self) -> str:
        """``plugin entry point 'x' (group of distribution, module:attr)``."""
        ep = self.entry_point
        return _label(self.group, ep.name, ep.value, distribution_of(ep))


def load_group(group: Group, found: Iterable[EntryPoint], problems: list[PluginProblem]) -> Iterator[Found]:
    """Load each entry point of ``group`` in turn; record those that fail to import in ``problems``."""
    for ep in found:
        try:
            obj = ep.load()
        except (Exception, SystemExit) as exc:  # the plugin's own import-time code
            dist = distribution_of(ep)
            fix = f"reinstall or uninstall {dist.split()[0]}" if dist else "reinstall or uninstall the plugin"
            problems.append(
                PluginProblem(
                    group,
                    ep.name,
                    ep.value,
                    dist,
                    f"importing it failed: {one_line(exc)}",
                    f'check that `python -c "import {_module_of(ep.value)}"` works in this environment, or {fix}',
                )
            )
            continue
        yield Found(group, ep, obj)


EntryPoints = Callable[[str], Iterable[EntryPoint]]
"""Where entry points are found: a group's name -> its entry points."""


def register(
    item: Found,
    expected: type,
    other: type,
    table: MutableMapping[str, Any],
    owners: MutableMapping[tuple[str, str], str],
) -> PluginProblem | None:
    """Add the kind ``item`` names to ``table``, or say why it cannot be.

    Args:
        item: a loaded entry point.
        expected: the kind class of its group (`StageKind` for the stages group).
        other: the kind class of the other group, for a hint when it is that.
        table: the kinds of its group, by name.
        owners: who registered each ``(group, name)``, for the message when a
            plugin would replace it; the new kind is recorded there.
    """
    obj = item.obj
    if not isinstance(obj, expected):
        if isinstance(obj, other):
            right = ADAPTER_GROUP if item.group == STAGE_GROUP else STAGE_GROUP
            hint = f"declare it in the {right!r} entry-point group instead"
        else:
            hint = f"point the entry point at a funcpipe.registry.{expected.__name__} object (not a class or a factory)"
        wanted = expected.__name__
        return item.problem(f"it names {a_name_for(obj)}, not {_article(wanted)} {wanted}", hint)
    what = _WHAT[item.group]
    name = getattr(obj, "name", "")
    if not isinstance(name, str) or not name or ":" in name or name != name.strip():
        return item.problem(
            f"its {what} is named {name!r}: a kind's name is plain text without ':' "
            "(a spec reads `module:attr` as an import path)",
            "rename the kind in the plugin, e.g. 'acme.tune'",
        )
    if table.get(name) is obj:  # the same kind under two entry point names
        return None
    if name in table:
        owner = owners.get((item.group, name), f"the {what} {name!r} registered before the plugins")
        return item.problem(
            f"its {what} {name!r} would replace {owner}: refused",
            "give the plugin's kind a name of its own (a prefix such as 'acme.' avoids clashes), "
            "or uninstall one of the two",
        )
    table[name] = obj
    owners[(item.group, name)] = f"the {what} {name!r} of {item.label()}"
    return None


def explain_unknown(
    problems: Iterable[PluginProblem], group: str, name: str, message: str, *, close: bool
) -> tuple[str, str] | None:
    """The message and hint for an unknown ``name`` when a plugin problem may explain it; None if none may.

    Args:
        problems: the plugin problems found.
        group: the entry-point group the name was looked up in.
        name: the name a spec wrote.
        message: the plain "unknown kind" message.
        close: whether a known name is close to it (then a misspelling is the
            likely cause, and problems of other entry points are left out).
    """
    mine = [p for p in problems if p.group == group]
    own = next((p for p in mine if p.entry_point == name), None)
    if own is not None:
        # The entry point named like the kind is the one that would have provided it.
        return f"{_WHAT[group]} {name!r} comes from a plugin that cannot be used: {own.describe()}", own.hint
    if not mine or close:
        return None
    listed = "; ".join(p.describe() for p in mine)
    hint = mine[0].hint if len(mine) == 1 else "fix or uninstall the plugins named above"
    return f"{message} (it may come from a plugin that cannot be used: {listed})", hint


__all__ = [
    "ADAPTER_GROUP",
    "STAGE_GROUP",
    "EntryPoints",
    "Found",
    "Group",
    "PluginProblem",
    "a_name_for",
    "distribution_of",
    "explain_unknown",
    "load_group",
    "one_line",
    "register",
]
