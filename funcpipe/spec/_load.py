"""Loading a spec: parse with positions, apply params and ``--set``, interpolate,
render, validate, check, and resolve into a `LoadedSpec`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, cast

from pydantic import ValidationError

from funcpipe.core import stable_id
from funcpipe.errors import SpecError, SpecErrors
from funcpipe.policy.models import NO_POLICY
from funcpipe.registry import REGISTRY, Registry
from funcpipe.spec._checks import TEMPLATE_FIELDS, check_document, resolve_policy, template_error
from funcpipe.spec._diagnose import pydantic_errors, show
from funcpipe.spec._interpolate import UnknownValues, interpolate_document, is_env_field, unset_env_fields
from funcpipe.spec._paths import Path, format_path, parse_path
from funcpipe.spec._yaml import MAX_BYTES, Document, Mark, Place, parse_yaml, walk_strings
from funcpipe.spec.loaded import LoadedSpec
from funcpipe.spec.models import PipelineSpec
from funcpipe.spec.templating import TemplateError, has_template, render_template
from funcpipe.stages.config import StageConfig

SET_FILE = "<--set>"
"""The file name of errors in ``--set`` values; the line is the option's ordinal."""


def load_spec(
    path: str | FsPath,
    *,
    overrides: Sequence[str] = (),
    params_file: str | FsPath | None = None,
    env: Mapping[str, str] | None = None,
    registry: Registry = REGISTRY,
    check_sources: bool = True,
) -> LoadedSpec:
    """Load, validate and resolve the spec file at ``path``.

    Args:
        path: the spec file.
        overrides: ``key.path=value`` strings (``--set``); values are YAML
            scalars or flow collections (``400``, ``true``, ``[a, b]``).
        params_file: a YAML mapping merged into ``params``.
        env: the variables ``${VAR}`` reads (default: the process environment).
        registry: the stage and adapter kinds.
        check_sources: check that source paths written literally exist (off
            for commands that read no source: ``graph``, ``query``).

    Raises:
        SpecErrors: every error found, each located.
    """
    p = FsPath(path)
    text = _read(p)
    return load_spec_text(
        text,
        filename=str(path),
        base_dir=p.resolve().parent,
        overrides=overrides,
        params_file=params_file,
        env=env,
        registry=registry,
        check_sources=check_sources,
    )


def _read_error(path: FsPath, message: str, hint: str) -> SpecErrors:
    return SpecErrors([SpecError(message, file=str(path), hint=hint)])


def _kind_of(mode: int) -> str | None:
    """What a non-regular file is, in a user's words (``None`` for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _read_bytes(path: FsPath) -> bytes:
    # A FIFO blocks `open` for ever and /dev/zero never ends: only regular
    # files are opened, and never read past MAX_BYTES, whatever size they
    # claim (files under /proc report 0).
    not_regular = "name a spec file: a regular YAML file, not a directory, pipe or device"
    try:
        kind = _kind_of(os.stat(path).st_mode)
        if kind is not None:
            raise _read_error(path, f"cannot read the spec: it is {kind}", not_regular)
        # O_NONBLOCK: a FIFO swapped in after the check must not block `open`.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise _read_error(
            path, f"cannot read the file: {exc.strerror or exc}", "check the path and its permissions"
        ) from None
    too_big = "a spec is a few kilobytes; split data out into files the stages read"
    with os.fdopen(fd, "rb") as f:
        try:
            st = os.fstat(f.fileno())
            kind = _kind_of(st.st_mode)
            if kind is not None:
                raise _read_error(path, f"cannot read the spec: it is {kind}", not_regular)
            if st.st_size > MAX_BYTES:
                raise _read_error(path, f"the file is too large ({st.st_size} bytes; at most {MAX_BYTES})", too_big)
            raw = f.read(MAX_BYTES + 1)
        except OSError as exc:
            raise _read_error(
                path, f"cannot read the file: {exc.strerror or exc}", "check the path and its permissions"
            ) from None
    if len(raw) > MAX_BYTES:
        raise _read_error(path, f"the file is too large (more than {MAX_BYTES} bytes)", too_big)
    return raw


def _read(path: FsPath) -> str:
    raw = _read_bytes(path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise SpecErrors(
            [
                SpecError(
                    f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x})",
                    file=str(path),
                    line=line,
                    col=col,
                    hint="save the spec as UTF-8",
                )
            ]
        ) from None


def load_spec_text(
    text: str,
    *,
    filename: str = "<string>",
    base_dir: FsPath | None = None,
    overrides: Sequence[str] = (),
    params_file: str | FsPath | None = None,
    env: Mapping[str, str] | None = None,
    registry: Registry = REGISTRY,
    check_sources: bool = True,
) -> LoadedSpec:
    """Load, validate and resolve a spec given as text.

    Args:
        text: the YAML source.
        filename: the name used in error locations and as `LoadedSpec.path`.
        base_dir: where relative paths resolve (default: the current directory).
        overrides: as for `load_spec`.
        params_file: as for `load_spec`.
        env: as for `load_spec`.
        registry: as for `load_spec`.
        check_sources: as for `load_spec`.

    Raises:
        SpecErrors: every error found, each located.
    """
    loaded, errors, _ = _load_text(
        text,
        filename=filename,
        base_dir=base_dir,
        overrides=overrides,
        params_file=params_file,
        env=os.environ if env is None else env,
        registry=registry,
        unknown=None,
        check_sources=check_sources,
    )
    if errors or loaded is None:
        raise SpecErrors(errors)
    return loaded


@dataclass(frozen=True)
class SpecCheck:
    """What `check_spec` found in one spec.

    Attributes:
        errors: every error, each located; empty when the spec is valid.
        unset: the variables ``${VAR}`` reads that are unset and have no
            default, in the order met (always empty with ``check_env``,
            where they are errors).
        name: the pipeline's name, when the document gives one.
        stages: how many stages the document lists.
    """

    errors: tuple[SpecError, ...]
    unset: tuple[str, ...]
    name: str | None
    stages: int

    @property
    def valid(self) -> bool:
        """True when no error was found."""
        return not self.errors


def check_spec(
    path: str | FsPath,
    *,
    overrides: Sequence[str] = (),
    params_file: str | FsPath | None = None,
    env: Mapping[str, str] | None = None,
    check_env: bool = False,
    registry: Registry = REGISTRY,
) -> SpecCheck:
    """Validate the spec file at ``path`` without running anything (``funcpipe validate``).

    By default the environment a run will have is not required: an unset
    ``${VAR}`` without default is listed in `SpecCheck.unset`, and errors
    about the values it would fill are not reported (they depend only on a
    value that is not known here). Every other error is.

    Args:
        path: the spec file.
        overrides: as for `load_spec`.
        params_file: as for `load_spec`.
        env: as for `load_spec`.
        check_env: require the run's environment (deploy checks): an unset
            ``${VAR}`` without default is an error, as is every unset or
            empty variable an adapter's ``*_env`` field names.
        registry: as for `load_spec`.
    """
    variables = os.environ if env is None else env
    unknown = None if check_env else UnknownValues()

    def unset() -> tuple[str, ...]:
        return tuple(unknown.names) if unknown is not None else ()

    try:
        text = _read(FsPath(path))
        _, errors, doc = _load_text(
            text,
            filename=str(path),
            base_dir=FsPath(path).resolve().parent,
            overrides=overrides,
            params_file=params_file,
            env=variables,
            registry=registry,
            unknown=unknown,
            check_env_fields=check_env,
        )
    except SpecErrors as exc:
        return SpecCheck(tuple(exc.errors), unset(), None, 0)
    data = doc.data if isinstance(doc.data, dict) else {}
    name = data.get("name")
    stages = data.get("stages")
    return SpecCheck(
        tuple(errors),
        unset(),
        name if isinstance(name, str) and not (unknown and unknown.holds(name)) else None,
        len(stages) if isinstance(stages, list) else 0,
    )


def _load_text(
    text: str,
    *,
    filename: str,
    base_dir: FsPath | None,
    overrides: Sequence[str],
    params_file: str | FsPath | None,
    env: Mapping[str, str],
    registry: Registry,
    unknown: UnknownValues | None,
    check_env_fields: bool = False,
    check_sources: bool = True,
) -> tuple[LoadedSpec | None, list[SpecError], Document]:
    doc = parse_yaml(text, filename)
    if not isinstance(doc.data, dict):
        raise SpecErrors(
            [
                doc.error(
                    (),
                    f"the top level must be a mapping, got {show(doc.data)}",
                    hint="a spec is a mapping: `version: 1`, `name:`, `stages:` ...",
                )
            ]
        )
    errors: list[SpecError] = []
    if params_file is not None:
        errors.extend(_merge_params(doc, FsPath(params_file)))
    for n, arg in enumerate(overrides, start=1):
        errors.extend(_apply_override(doc, arg, n))
    errors.extend(interpolate_document(doc, env, unknown))
    errors.extend(_render(doc))
    # A value that could not be interpolated or rendered is reported once,
    # not again by the validation that sees its raw text.
    unresolved = {e.path for e in errors}

    spec: PipelineSpec | None = None
    try:
        spec = PipelineSpec.model_validate(doc.data)
    except ValidationError as exc:
        errors.extend(e for e in pydantic_errors(doc, exc, model=PipelineSpec) if e.path not in unresolved)
    base = base_dir if base_dir is not None else FsPath.cwd()
    checked = check_document(doc, registry, base, check_sources=check_sources)
    errors.extend(e for e in checked.errors if e.path not in unresolved)
    if check_env_fields:
        errors.extend(unset_env_fields(doc, checked.adapters, env))
    if unknown is not None:
        errors = unknown.independent(doc, errors)
    if errors or spec is None:
        return None, _ordered(errors, filename), doc

    named = dict(spec.policies)
    return (
        LoadedSpec(
            spec=spec,
            path=FsPath(filename),
            base_dir=base,
            adapters=dict(checked.adapters),
            stage_configs={k: cast(StageConfig, v) for k, v in checked.stage_configs.items()},
            stage_policies={s.id: resolve_policy(s.policy, named, NO_POLICY) for s in spec.stages},
            inputs=dict(checked.inputs),
            stage_kinds=dict(checked.stage_kinds),
            adapter_kinds=dict(checked.adapter_kinds),
            order=checked.order,
            fingerprint=stable_id(spec.model_dump(mode="json", by_alias=True)),
            query_policy=resolve_policy(spec.query.policy, named, NO_POLICY) if spec.query else NO_POLICY,
            text=text,
        ),
        [],
        doc,
    )


def _ordered(errors: list[SpecError], main: str) -> list[SpecError]:
    seen: set[tuple[str, int, int, str, str]] = set()
    out: list[SpecError] = []
    for e in errors:
        key = (e.file, e.line, e.col, e.path, e.message)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return sorted(out, key=lambda e: (e.file != main, e.file, e.line, e.col))


def _replace_places(doc: Document, at: Path, places: Mapping[Path, Place]) -> None:
    n = len(at)
    for old in [p for p in doc.places if p[:n] == at]:
        del doc.places[old]
    for rel, place in places.items():
        doc.places[(*at, *rel)] = place


def _merge_params(doc: Document, path: FsPath) -> list[SpecError]:
    try:
        extra = parse_yaml(_read(path), str(path))
    except SpecErrors as exc:
        return list(exc.errors)
    if not isinstance(extra.data, dict):
        return [
            extra.error(
                (),
                f"a params file must be a mapping, got {show(extra.data)}",
                hint="write `name: value` lines; they are merged into `params:`",
            )
        ]
    params = doc.data.setdefault("params", {})
    if params is None:
        params = doc.data["params"] = {}
    if not isinstance(params, dict):
        return [
            doc.error(
                ("params",),
                f"params should be a mapping to merge {path} into, got {show(params)}",
                hint="write params as `name: value` pairs",
            )
        ]
    doc.places.setdefault(("params",), extra.places[()])
    _deep_merge(doc, params, extra.data, ("params",), extra.places, ())
    return []


def _deep_merge(
    doc: Document,
    dst: dict[str, Any],
    src: dict[str, Any],
    at: Path,
    places: Mapping[Path, Place],
    src_at: Path,
) -> None:
    for key, value in src.items():
        here: Path = (*at, key)
        there: Path = (*src_at, key)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_merge(doc, dst[key], value, here, places, there)
            continue
        dst[key] = value
        n = len(there)
        sub = {p[n:]: pl for p, pl in places.items() if p[:n] == there}
        _replace_places(doc, here, sub)


def _apply_override(doc: Document, arg: str, n: int) -> list[SpecError]:
    key, sep, raw = arg.partition("=")
    key = key.strip()

    def fail(message: str, col: int = 1) -> list[SpecError]:
        return [
            SpecError(
                f"--set {arg}: {message}",
                file=SET_FILE,
                line=n,
                col=col,
                path=key,
                hint="write --set key.path=value, e.g. --set params.corpus=docs or --set stages[2].with.size=400",
            )
        ]

    if not sep:
        return fail("no '=' between the key path and the value")
    try:
        path = parse_path(key)
    except ValueError as exc:
        return fail(str(exc))
    value_col = len(arg) - len(raw) + 1
    try:
        parsed = parse_yaml(raw, SET_FILE, allow_empty=True)
    except SpecErrors as exc:
        first = exc.errors[0]
        return fail(first.message, value_col + first.col - 1)
    target: Any = doc.data
    real: list[str | int] = []
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(target, dict):
            name = str(part)
            real.append(name)
            if last:
                target[name] = parsed.data
            else:
                # Only an absent or null value becomes a new mapping: replacing
                # a written scalar would hide a mistyped path.
                if target.get(name) is None:
                    target[name] = {}
                target = target[name]
        elif isinstance(target, list):
            if not isinstance(part, int) or not -len(target) <= part < len(target):
                return fail(
                    f"{format_path(tuple(real)) or 'the document'} is a list of {len(target)} "
                    f"items; {part!r} does not select one of them"
                )
            index = part % len(target)
            real.append(index)
            if last:
                target[index] = parsed.data
            else:
                target = target[index]
        else:
            return fail(f"{format_path(tuple(real))} is not a mapping or a list")
    places = {
        rel: Place(
            Mark(SET_FILE, n, pl.value.col + value_col - 1),
            Mark(SET_FILE, n, pl.key.col + value_col - 1),
            pl.style,
        )
        for rel, pl in parsed.places.items()
    }
    here = tuple(real)
    for i in range(1, len(here)):
        doc.places.setdefault(here[:i], Place(Mark(SET_FILE, n, 1), Mark(SET_FILE, n, 1)))
    _replace_places(doc, here, places)
    doc.places[here] = Place(places[()].value, Mark(SET_FILE, n, 1), places[()].style)
    return []


def _render(doc: Document) -> list[SpecError]:
    errors: list[SpecError] = []
    params = doc.data.get("params")
    variables = {"params": params if isinstance(params, dict) else {}}
    for path, value in list(walk_strings(doc.data)):
        if path[:1] == ("params",) or path in TEMPLATE_FIELDS or is_env_field(path):
            continue
        if not has_template(value):
            continue
        try:
            rendered = render_template(value, variables)
        except TemplateError as exc:
            errors.append(template_error(doc, path, exc))
            continue
        doc.written.setdefault(path, value)
        target = doc.data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = rendered
    return errors
