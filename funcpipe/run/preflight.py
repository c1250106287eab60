"""Pre-flight checks: what must hold before a run does any work, each failing with the fix.

In order: the run's outputs can be written (`check_outputs`), the adapters'
credentials are set (`missing_credentials`), the sources have something to
read (`check_source_stages`), every stage kind's factory and ``prepare``
step can be imported (`load_factories`: a plugin's may name a module that
is not installed), and every ``prepare`` step succeeds (`prepare_stages`: a
store's table matches its embedder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from funcpipe.adapters.config import env_fields
from funcpipe.compile import CompiledPipeline
from funcpipe.core import Err
from funcpipe.errors import RunError
from funcpipe.policy.apply import PolicyRuntime
from funcpipe.policy.clock import Clock
from funcpipe.policy.events import EventSink
from funcpipe.run.deadletter import DeadLetters
from funcpipe.run.report import unwritable
from funcpipe.spec.sources import check_sources
from funcpipe.stages.base import StageContext


def check_outputs(
    state_dir: Path, dead: DeadLetters, report_path: Path | None, *, metrics_file: Path | None = None
) -> None:
    """Fail before any work if the state directory, dead-letter file, report or metrics file cannot be written.

    Otherwise a run would stop at its first failed item, or lose its report
    after all the work is done (and paid for).

    Raises:
        RunError: naming every output in the way, and how to fix it.
    """
    problems: list[str] = []
    reason = unwritable(state_dir, directory=True)
    if reason is not None:
        problems.append(
            f"cannot write the state directory {state_dir}: {reason}; make it writable, or remove what is in its way"
        )
    if reason is None or state_dir not in dead.path.parents:
        try:
            dead.check()
        except RunError as exc:
            problems.append(str(exc))
    if report_path is not None and (reason := unwritable(report_path)) is not None:
        problems.append(f"cannot write the report {report_path}: {reason}; choose a writable --report path")
    if metrics_file is not None and (reason := unwritable(metrics_file)) is not None:
        problems.append(
            f"cannot write the metrics file {metrics_file}: {reason}; choose a writable --metrics-file path"
        )
    if problems:
        raise RunError("; ".join(problems) + " (nothing was run)")


def missing_credentials(pipeline: CompiledPipeline, names: Iterable[str], resources: Any) -> str | None:
    """Why the adapters ``names`` cannot authenticate, or None: a variable they read (``*_env``) is unset or empty.

    Checked before the first call: otherwise every item would be refused by
    the service, one ``AUTH`` dead letter each.

    Args:
        pipeline: the compiled pipeline.
        names: the adapters the command will use.
        resources: the run's resources (`Resources.secret` reads the variables).

    Returns:
        One message naming each adapter and variable (never a value), or None.
    """
    problems: list[str] = []
    for name in sorted(set(names)):
        adapter = pipeline.adapters.get(name)
        if adapter is None:
            continue
        for field_name, variable in env_fields(adapter.config):
            try:
                value = resources.secret(variable)
            except RunError:
                value = None
            secret = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            if secret:
                continue
            kind = adapter.kind.name
            which = f"its {field_name}" if field_name in adapter.config.model_fields_set else f"the {kind} default"
            problems.append(
                f"adapter {name!r} ({kind}) reads {variable} ({which}), which is not set or empty: export "
                f"{variable}=... before the run, or set adapters.{name}.{field_name} to the variable that "
                f"holds it ({field_name}: null if the service needs none)"
            )
    return "; ".join(problems) + " (nothing was called)" if problems else None


def check_source_stages(pipeline: CompiledPipeline) -> None:
    """Fail if a source stage would read nothing, located at its ``with.path``.

    Raises:
        funcpipe.spec.sources.SourcePathErrors: one located error per such stage.
    """
    stages = sorted((st.index, st.config) for st in pipeline.sources)
    check_sources(pipeline.text, str(pipeline.path), pipeline.base_dir, stages)


def load_factories(pipeline: CompiledPipeline) -> dict[str, Callable[..., Any]]:
    """Each stage's factory, by stage id, with its kind's ``prepare`` step imported too, before any work.

    A kind names both by import path, imported on first use so that
    validating imports no client; a path that cannot be imported is found
    here, not when the first item reaches the stage.

    Raises:
        RunError: naming every stage whose kind's factory or prepare step
            cannot be imported, the path and the exception's one line.
    """
    factories: dict[str, Callable[..., Any]] = {}
    problems: list[str] = []
    for st in pipeline.stages:
        for what, path, load in (
            ("factory", st.kind.factory, st.kind.load_factory),
            ("prepare step", st.kind.prepare, st.kind.load_prepare),
        ):
            try:
                loaded = load()
            except Exception as exc:  # the import runs the kind's own module
                shown = f" {path!r}" if isinstance(path, str) else ""
                first = (str(exc).strip().splitlines() or [""])[0]
                problems.append(
                    f"stage {st.id}: the {what}{shown} of stage kind {st.kind.name!r} cannot be imported: "
                    f"{type(exc).__name__}: {first}"
                )
                continue
            if what == "factory" and loaded is not None:
                factories[st.id] = loaded
    if problems:
        raise RunError("; ".join(problems) + " (nothing was run)")
    return factories


async def prepare_stages(
    pipeline: CompiledPipeline, contexts: dict[str, StageContext], *, clock: Clock, events: EventSink
) -> None:
    """Run each stage kind's ``prepare`` step once, under the stage's policy, before any source is read.

    A stage whose step ran is marked ``prepared`` in its context.

    Raises:
        RunError: the first step that fails, naming the stage and its adapter.
    """
    for st in pipeline.stages:
        prepare = st.kind.load_prepare()
        if prepare is None:
            continue
        ctx = contexts[st.id]
        plan = prepare(st.config, ctx)
        if plan is None:
            continue
        runtime = PolicyRuntime(st.policy, clock=clock, events=events, stage=st.id)
        res = await runtime.apply(plan)()
        if isinstance(res, Err):
            what = f"adapter {st.adapter!r}" if st.adapter else st.kind.name
            raise RunError(f"stage {st.id}: cannot prepare {what}: {res.error.code}: {res.error.msg}")
        ctx.prepared = True


async def finish_stages(
    pipeline: CompiledPipeline, contexts: dict[str, StageContext], *, clock: Clock, events: EventSink
) -> None:
    """Run each stage kind's ``finish`` step once, under the stage's policy, after the stream has drained.

    The runner calls it only when every source was read to the end and no
    stop was asked: a store's deferred index is built then, and a run cut
    short leaves it to the next run's ``prepare``.

    Raises:
        RunError: the first step that fails, naming the stage and its adapter.
    """
    for st in pipeline.stages:
        finish = st.kind.load_finish()
        if finish is None:
            continue
        plan = finish(st.config, contexts[st.id])
        if plan is None:
            continue
        runtime = PolicyRuntime(st.policy, clock=clock, events=events, stage=st.id)
        res = await runtime.apply(plan)()
        if isinstance(res, Err):
            raise RunError(f"stage {st.id}: cannot finish adapter {st.adapter!r}: {res.error.code}: {res.error.msg}")


__all__ = [
    "check_outputs",
    "check_source_stages",
    "finish_stages",
    "load_factories",
    "missing_credentials",
    "prepare_stages",
]
