"""The root Python API: `load` a spec into a `Pipeline`, then run, query, draw or estimate it.

    import funcpipe

    pipeline = funcpipe.load("pipelines/rag.yaml")
    report = pipeline.run()
    answer = pipeline.query("how do I switch the embedding provider?")

The ``funcpipe`` command line is a thin caller of this module: whatever it
shows (progress, JSON logs, the summary) attaches through `RunSession`'s
public hooks, never through the runner's insides. The HTTP and database
clients and the terminal library are imported on first use.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, Unpack, overload

from funcpipe._session import RunSession, RunSettings, StageInfo, StrPath, _check_settings, _sync
from funcpipe.compile import CompiledPipeline, compile_pipeline
from funcpipe.errors import SpecErrors
from funcpipe.spec import LoadedSpec, SpecCheck, check_spec, load_spec

if TYPE_CHECKING:
    from funcpipe.run.estimate import StageEstimate
    from funcpipe.run.query import Answer
    from funcpipe.run.report import RunReport

T = TypeVar("T")

Overrides = str | Sequence[str] | Mapping[str, object]
"""``--set`` overrides: ``"key.path=value"`` strings, or a mapping of key paths to values."""

Params = StrPath | Mapping[str, object]
"""``--params``: a YAML file of params, or a mapping merged into ``params``."""


class Estimate:
    """The dry run's plan and estimate (``funcpipe run --dry-run``), as a value.

    Attributes:
        pipeline: the pipeline's name.
        latency: the assumed seconds per external call.
        stages: per stage, in graph order, what it is expected to see and do.
    """

    def __init__(self, compiled: CompiledPipeline, stages: Sequence[StageEstimate], latency: float) -> None:
        self._compiled = compiled
        self.pipeline = compiled.name
        self.latency = latency
        self.stages = tuple(stages)

    def __repr__(self) -> str:
        return f"Estimate(pipeline={self.pipeline!r}, least_duration={self.least_duration:.1f}s)"

    @property
    def least_duration(self) -> float:
        """The least time the run can take, in seconds: its slowest external stage's bound."""
        from funcpipe.run.estimate import least_duration

        return least_duration(list(self.stages))

    @property
    def tokens(self) -> int:
        """The input tokens the embedding stages will send, estimated from characters."""
        return sum(s.tokens or 0 for s in self.stages)

    @property
    def cost(self) -> float | None:
        """The estimated cost in USD over the priced adapters; None when none is priced."""
        costs = [s.cost for s in self.stages if s.cost is not None]
        return sum(costs) if costs else None

    @property
    def over_budget(self) -> list[str]:
        """What the estimate exceeds, one entry per budget; a run refuses to start on it unless ``force``."""
        from funcpipe.run.estimate import over_budget

        return over_budget(self._compiled, list(self.stages))

    def to_json(self) -> dict[str, Any]:
        """The plan and estimate as ``--dry-run --log-format json`` prints them.

        ``{"pipeline", "latency_s", "least_duration_s", "stages", "tokens", "cost", "budgets"}``.
        """
        from funcpipe.run.estimate import to_json

        return to_json(self._compiled, list(self.stages), latency=self.latency)

    def print(self, file: IO[str] | None = None) -> None:
        """Print the plan and the estimate as two tables, as ``--dry-run`` does (default: stdout)."""
        from funcpipe.run.estimate import print_plan

        print_plan(self._compiled, list(self.stages), sys.stdout if file is None else file, latency=self.latency)


class Pipeline:
    """A loaded, validated and compiled pipeline. Nothing has run yet.

    Get one with `funcpipe.load`.
    """

    def __init__(self, loaded: LoadedSpec, compiled: CompiledPipeline) -> None:
        self._loaded = loaded
        self._compiled = compiled

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, path={str(self.path)!r}, stages={len(self.stages)})"

    @property
    def compiled(self) -> CompiledPipeline:
        """The compiled description, for tools built on `funcpipe.run` and `funcpipe.render`."""
        return self._compiled

    @property
    def name(self) -> str:
        """The pipeline's name."""
        return self._compiled.name

    @property
    def description(self) -> str | None:
        """The spec's ``description:``."""
        return self._loaded.spec.description

    @property
    def path(self) -> Path:
        """The spec file."""
        return self._loaded.path

    @property
    def fingerprint(self) -> str:
        """sha256 of the fully rendered spec: two loads with the same fingerprint run the same thing."""
        return self._loaded.fingerprint

    @property
    def stages(self) -> tuple[StageInfo, ...]:
        """The stages, in graph order."""
        return tuple(StageInfo(s.id, s.kind.name, s.adapter, s.inputs) for s in self._compiled.stages)

    def redact(self, text: str) -> str:
        """``text`` with the pipeline's secrets (``*_env`` values, DSN passwords) masked."""
        from funcpipe.run.redact import Redactor

        return Redactor.for_pipeline(self._compiled)(text)

    def session(self, **options: Unpack[RunSettings]) -> RunSession:
        """A run prepared but not started, to attach displays to (see `RunSession`)."""
        return RunSession(self, **options)

    async def run_async(self, **options: Unpack[RunSettings]) -> RunReport:
        """Run the pipeline once in the running event loop; see `run`."""
        return await RunSession(self, **options).run_async()

    def run(self, **options: Unpack[RunSettings]) -> RunReport:
        """Run the pipeline once and return its report.

        Items that fail do not raise: they are dead-lettered and counted
        (``report.exit_code`` is 1, ``report.accounting["failed"]`` says how
        many). Nor does a run that fails as a whole once started: its report
        has ``status`` ``"error"`` and the reason in ``message``. Done items
        are recorded, so a second run redoes only what changed.

        Args:
            **options: ``fresh``, ``seed``, ``report_path``, ``shutdown_timeout``,
                ``handle_signals``, ``listeners``, ``on_event``, ``notify``,
                ``state_dir``, ``clock``, ``buffer``, ``resources``, ``force``, ``trace``,
                ``tracer_provider``, ``metrics_port``, ``metrics_host``, ``metrics_file``,
                ``executor``, ``address``, ``workers`` (see `RunSettings`).

        Raises:
            RunError: the run could not start, and nothing was done (an unset
                API key, an unwritable state directory or report path; or
                `funcpipe.errors.BudgetExceeded`, exit code 4, when the estimate
                exceeds a budget and ``force`` is not set).
            RuntimeError: when called inside a running event loop: use `run_async`.
        """
        _check_settings(options)
        return _sync("Pipeline.run()", "pipeline.run_async()", lambda: self.run_async(**options))

    async def query_async(self, question: str, *, top_k: int | None = None, mode: str | None = None) -> Answer:
        """Answer ``question`` in the running event loop; see `query`."""
        from funcpipe.run.query import answer_question, check_mode

        return await answer_question(self._compiled, question, top_k=top_k, mode=check_mode(mode))

    def query(self, question: str, *, top_k: int | None = None, mode: str | None = None) -> Answer:
        """Answer ``question`` from what the pipeline stored, with the spec's own adapters.

        ``Answer.weak`` says (None when all is well) when even the best
        passage matches the question weakly, so the answer may be noise.

        Args:
            question: the question.
            top_k: how many chunks to retrieve (default: the spec's ``query.top_k``).
            mode: ``vector``, ``keyword`` or ``hybrid`` (default: the spec's ``query.mode``).

        Raises:
            ValueError: ``mode`` is not a retrieval mode.
            SpecError: the spec has no ``query:`` section, or cannot tell its store.
            RunError: a service call failed, nothing was ingested yet, or the
                store holds another embedder's vectors.
            RuntimeError: when called inside a running event loop: use `query_async`.
        """
        return _sync(
            "Pipeline.query()", "pipeline.query_async()", lambda: self.query_async(question, top_k=top_k, mode=mode)
        )

    @overload
    def render(self, format: Literal["png"]) -> bytes: ...

    @overload
    def render(self, format: Literal["mermaid", "dot", "svg", "html"] = "mermaid") -> str: ...

    @overload
    def render(self, format: str) -> str | bytes: ...

    def render(self, format: str = "mermaid") -> str | bytes:
        """Draw the pipeline: ``mermaid``, ``dot``, ``svg`` and ``html`` as text, ``png`` as bytes.

        Raises:
            ValueError: for an unknown format.
            RunError: ``svg`` or ``png`` without Graphviz installed.
        """
        from funcpipe.render import render

        data = render(self._compiled, format)
        return data if format == "png" else data.decode("utf-8")

    def estimate(self, latency: float = 0.1, *, fresh: bool = False) -> Estimate:
        """The plan and what it will cost, calling nothing (``funcpipe run --dry-run``).

        For a pipeline with a budget, what earlier runs finished is left out
        (the files are read to tell), so the estimate is that of the next run.

        Args:
            latency: assumed seconds per external call, for the concurrency bound.
            fresh: count every source item, as ``run(fresh=True)`` would redo them.
        """
        from funcpipe.run.estimate import estimate, finished_before

        if fresh:
            return Estimate(self._compiled, estimate(self._compiled, latency=latency), latency)
        with finished_before(self._compiled) as finished:
            stages = estimate(self._compiled, latency=latency, finished=finished)
        return Estimate(self._compiled, stages, latency)


_PARAM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def _yaml_value(where: str, value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise TypeError(
            f"{where}: {value!r} cannot be written in a spec; use str, int, float, bool, None, list or dict"
        ) from None


def _param_overrides(params: Mapping[str, object], at: str) -> list[str]:
    out: list[str] = []
    for key, value in params.items():
        if not isinstance(key, str) or not _PARAM_KEY.match(key):
            raise ValueError(f"params key {key!r} at {at}: write keys as names (letters, digits, _ and -)")
        path = f"{at}.{key}"
        if isinstance(value, Mapping) and value:
            out += _param_overrides(value, path)
        else:
            out.append(f"{path}={_yaml_value(path, value)}")
    return out


def _spec_inputs(overrides: Overrides | None, params: Params | None) -> tuple[list[str], str | None]:
    """``(override strings, params file)`` for `load_spec`: a params mapping is applied as overrides first."""
    out: list[str] = []
    params_file: str | None = None
    if isinstance(params, Mapping):
        out += _param_overrides(params, "params")
    elif params is not None:
        params_file = os.fspath(params)
    if isinstance(overrides, str):
        out.append(overrides)
    elif isinstance(overrides, Mapping):
        out += [f"{k}={_yaml_value(f'set[{k!r}]', v)}" for k, v in overrides.items()]
    elif overrides is not None:
        out += list(overrides)
    return out, params_file


def load(
    path: StrPath,
    *,
    set: Overrides | None = None,
    params: Params | None = None,
    env: Mapping[str, str] | None = None,
    check_sources: bool = True,
) -> Pipeline:
    """Load, validate and compile the spec at ``path``.

    Args:
        path: the spec file.
        set: overrides applied before validation, as ``--set`` does: strings
            ``"stages[2].with.size=400"`` (values are YAML), or a mapping
            ``{"stages[2].with.size": 400}`` (values are Python values).
        params: a YAML file merged into ``params`` (``--params``), or a
            mapping, each of whose values is set under ``params`` (nested
            mappings merge). ``set`` is applied after it.
        env: the variables ``${VAR}`` reads (default: `os.environ`).
        check_sources: check now that source paths written literally exist;
            turn it off for a pipeline only queried or drawn (a run checks
            them again when it starts).

    Raises:
        SpecErrors: every error found, each located (file, line, column, path, hint).
    """
    overrides, params_file = _spec_inputs(set, params)
    loaded = load_spec(
        os.fspath(path), overrides=overrides, params_file=params_file, env=env, check_sources=check_sources
    )
    return Pipeline(loaded, compile_pipeline(loaded))


def check(
    path: StrPath,
    *,
    set: Overrides | None = None,
    params: Params | None = None,
    env: Mapping[str, str] | None = None,
    check_env: bool = False,
) -> SpecCheck:
    """Check the spec at ``path`` and report, never raise (``funcpipe validate``).

    Unlike `load`, an unset ``${VAR}`` without default is only a note unless
    ``check_env`` requires it (and the variables adapters read, API keys).

    Args:
        path: the spec file.
        set: as for `load`.
        params: as for `load`.
        env: as for `load`.
        check_env: require the run's environment.
    """
    if os.fspath(path).endswith((".test.yaml", ".test.yml")):  # funcpipe.pipetest.SUFFIXES
        return _check_test_file(Path(path), env=env, check_env=check_env)
    overrides, params_file = _spec_inputs(set, params)
    return check_spec(os.fspath(path), overrides=overrides, params_file=params_file, env=env, check_env=check_env)


def _check_test_file(path: Path, *, env: Mapping[str, str] | None, check_env: bool) -> SpecCheck:
    """`check` for a pipeline test file (``*.test.yaml``): the file itself, then the spec it names.

    The result's ``name`` is the spec it tests and ``stages`` its number of tests.
    """
    from funcpipe.pipetest import load_test_file

    try:
        loaded = load_test_file(path)
    except SpecErrors as exc:
        return SpecCheck(tuple(exc.errors), (), None, 0)
    spec = check_spec(os.fspath(loaded.spec_path), env=env, check_env=check_env)
    return SpecCheck(spec.errors, spec.unset, loaded.model.spec, len(loaded.model.tests))
