"""Running one test: the real spec, compiled and run by the real runner, on virtual time, offline.

For each test the spec is loaded with the test's overrides, exactly as
``--set`` would apply them: its adapters replaced, its sources pointed at
the test's inputs, and every vector store that the test does not name
replaced by ``memory``. The compiled pipeline is then sandboxed (dead letters,
state and sink files go to a scratch directory, never into the project) and
run on a `funcpipe.testing.VirtualEventLoop`, so a retry schedule of minutes
takes milliseconds. The run's HTTP client has no network: an adapter that
would call a service is refused before the run, and any request that still
tries fails as a ``NETWORK`` error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from funcpipe.compile import CompiledPipeline, CompiledStage, compile_pipeline
from funcpipe.core import Item
from funcpipe.errors import FuncpipeError, RunError, SpecError, SpecErrors
from funcpipe.pipetest._expect import Observed, check
from funcpipe.pipetest._load import LoadedTestFile
from funcpipe.pipetest._match import plain
from funcpipe.pipetest.results import CaseResult, Problem, SpecPath
from funcpipe.policy.models import format_duration
from funcpipe.ports import VectorStorePort
from funcpipe.registry import did_you_mean
from funcpipe.run import Runner, RunOptions, drive
from funcpipe.run.query import answer_question
from funcpipe.run.resources import RunResources
from funcpipe.spec import LoadedSpec, load_spec
from funcpipe.spec.documents import SET_FILE, parse_yaml
from funcpipe.testing import VirtualClock, VirtualEventLoop, VirtualTimeStall

STALL_SECONDS = 120.0
"""Real seconds a test may wait on something that is not the clock before it is stopped."""


class _Invalid(Exception):
    """The test or its spec is invalid: the run does not start (status ``error``)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


class _Unfinished(Exception):
    """The run did not finish within the test's timeout of virtual time."""

    def __init__(self, timeout: float, virtual: float) -> None:
        super().__init__(f"the run did not finish within {format_duration(timeout)} of virtual time")
        self.virtual = virtual


class _Offline(httpx.AsyncBaseTransport):
    """The transport of a test's HTTP client: nothing leaves the machine."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(
            f"funcpipe test runs offline: refused {request.method} {request.url.copy_with(query=None)}; "
            "override the adapter in the test (adapters:) with a local kind or kind: scripted",
            request=request,
        )


class _Override:
    """One ``--set`` override the test makes, and where in the test file it comes from."""

    def __init__(self, key: str, value: object, where: SpecPath) -> None:
        self.key = key
        self.value = value
        self.where = where

    @property
    def text(self) -> str:
        return f"{self.key}={json.dumps(plain(self.value), ensure_ascii=False)}"


class Case:
    """One test of a test file, ready to run.

    Args:
        loaded: the test file.
        index: the test's position in ``tests:``.
        scratch: a fresh directory for its inputs, state and outputs.
    """

    def __init__(self, loaded: LoadedTestFile, index: int, scratch: Path) -> None:
        self.loaded = loaded
        self.index = index
        self.test = loaded.model.tests[index]
        self.at: SpecPath = ("tests", index)
        self.scratch = scratch

    # -- errors -----------------------------------------------------------

    def _problem(self, where: SpecPath, message: str, hint: str | None = None, *, at_key: bool = False) -> Problem:
        return Problem.of(self.loaded.error(where, message, hint=hint, at_key=at_key))

    def _relocate(self, errors: SpecErrors, overrides: list[_Override]) -> list[Problem]:
        # An error in a value the test set is the test's: show it where the test wrote it.
        out: list[Problem] = []
        for e in errors.errors:
            if e.file == SET_FILE and 1 <= e.line <= len(overrides):
                o = overrides[e.line - 1]
                message = e.message.removeprefix(f"--set {o.text}: ")
                where = f"{e.path}: " if e.path and not message.startswith(e.path) else ""
                out.append(self._problem(o.where, f"{where}{message}", e.hint))
            else:
                out.append(Problem.of(e))
        return out

    # -- the spec, as the test changes it ----------------------------------

    def _overrides(self) -> list[_Override]:
        tf, t = self.loaded.model, self.test
        out = [_Override(k, v, ("set", k)) for k, v in tf.set.items()]
        out += [_Override(k, v, (*self.at, "set", k)) for k, v in t.set.items()]
        out += [_Override(f"params.{k}", v, (*self.at, "params", k)) for k, v in t.params.items()]
        adapters: dict[str, SpecPath] = {name: ("adapters", name) for name in tf.adapters}
        adapters.update({name: (*self.at, "adapters", name) for name in t.adapters})
        for name, where in adapters.items():
            config = t.adapters.get(name, tf.adapters.get(name))
            out.append(_Override(f"adapters.{name}", config, where))
        return out

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.loaded.model.env, **self.test.env}

    def _load(self, overrides: list[_Override], *, check_sources: bool) -> LoadedSpec:
        try:
            return load_spec(
                self.loaded.spec_path,
                overrides=[o.text for o in overrides],
                env=self._env(),
                check_sources=check_sources,
            )
        except SpecErrors as exc:
            raise _Invalid(self._relocate(exc, overrides)) from None

    def _spec_adapter_names(self) -> list[str]:
        try:
            doc = parse_yaml(self.loaded.spec_path.read_text(encoding="utf-8"), str(self.loaded.spec_path))
        except (SpecErrors, OSError, UnicodeDecodeError):
            return []  # loading the spec reports it
        adapters = doc.data.get("adapters") if isinstance(doc.data, dict) else None
        return list(adapters) if isinstance(adapters, dict) else []

    def _check_names(self, spec: LoadedSpec) -> None:
        t, tf = self.test, self.loaded.model
        stages = list(spec.order)
        sources = [s for s in stages if not spec.inputs.get(s)]
        problems: list[Problem] = []

        def unknown(where: SpecPath, what: str, name: str, known: list[str]) -> None:
            guess = did_you_mean(name, known)
            message = f"unknown {what} {name!r}" + (f" (did you mean {guess!r}?)" if guess else "")
            problems.append(
                self._problem(where, message, f"the spec's {what}s: {', '.join(known) or 'none'}", at_key=True)
            )

        for sid in t.inputs:
            if sid not in sources:
                unknown((*self.at, "inputs", sid), "source stage", sid, sources)
            elif "path" not in spec.stage_kinds[sid].config.model_fields:
                problems.append(
                    self._problem(
                        (*self.at, "inputs", sid),
                        f"source {sid!r} ({spec.stage_kinds[sid].name}) reads no path, so a test cannot give it inputs",
                        at_key=True,
                    )
                )
        for part in ("stages", "policy"):
            for sid in getattr(t.expect, part):
                if sid not in stages:
                    unknown((*self.at, "expect", part, sid), "stage", sid, stages)
        for i, d in enumerate(t.expect.dead_letters or []):
            if d.stage not in stages:
                unknown((*self.at, "expect", "dead_letters", i, "stage"), "stage", d.stage, stages)
        names = self._spec_adapter_names()
        if names:
            for name in tf.adapters:
                if name not in names:
                    unknown(("adapters", name), "adapter", name, names)
            for name in t.adapters:
                if name not in names:
                    unknown((*self.at, "adapters", name), "adapter", name, names)
        if t.expect.query and spec.spec.query is None:
            problems.append(
                self._problem((*self.at, "expect", "query"), "the spec has no query: section to ask", at_key=True)
            )
        if problems:
            raise _Invalid(problems)

    def _inputs(self, spec: LoadedSpec) -> list[_Override]:
        index = {s.id: i for i, s in enumerate(spec.spec.stages)}
        out: list[_Override] = []
        for sid, given in self.test.inputs.items():
            where: SpecPath = (*self.at, "inputs", sid)
            if given.files is not None:
                target = self.scratch / "inputs" / sid
                target.mkdir(parents=True, exist_ok=True)
                for name, text in given.files.items():
                    f = target / name
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_text(text, encoding="utf-8")
            elif given.lines is not None:
                target = self.scratch / "inputs" / f"{sid}.jsonl"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(
                    "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in given.lines), encoding="utf-8"
                )
            else:
                assert given.path is not None
                target = (self.loaded.path.parent / given.path).resolve()
                if not target.exists():
                    raise _Invalid(
                        [
                            self._problem(
                                (*where, "path"), f"no fixture {given.path!r}", "the path is relative to the test file"
                            )
                        ]
                    )
            out.append(_Override(f"stages[{index[sid]}].with.path", str(target), where))
        return out

    def _stores(self, spec: LoadedSpec) -> list[_Override]:
        named = set(self.test.adapters) | set(self.loaded.model.adapters)
        return [
            _Override(f"adapters.{name}", {"kind": "memory"}, self.at)
            for name, kind in spec.adapter_kinds.items()
            if VectorStorePort in kind.provides and kind.name != "memory" and name not in named
        ]

    def _offline(self, compiled: CompiledPipeline) -> None:
        used = {a for st in compiled.stages for a in (st.adapter, st.embedder) if a}
        q = compiled.query
        if q is not None and self.test.expect.query:
            used |= {a for a in (q.generator, q.embedder, q.store) if a}
        problems = []
        for name in sorted(used):
            url = getattr(compiled.adapters[name].config, "base_url", None)
            if isinstance(url, str):
                kind = compiled.adapters[name].kind.name
                problems.append(
                    self._problem(
                        (*self.at, "name"),
                        f"adapter {name!r} is kind {kind}, which calls {url}: a test never leaves the machine",
                        f"override it in the test: adapters: {{{name}: {{kind: scripted, provider: {kind}}}}} "
                        "(a scripted fake), or a local kind (hashing, extractive)",
                    )
                )
        if problems:
            raise _Invalid(problems)

    def _sandboxed(self, compiled: CompiledPipeline) -> CompiledPipeline:
        # Sinks write into the scratch directory: a test never writes into the project.
        def stage(st: CompiledStage) -> CompiledStage:
            path = getattr(st.config, "path", None)
            if st.kind.role != "sink" or not isinstance(path, str):
                return st
            out = self.scratch / "outputs" / st.id / (Path(path).name or "out")
            return replace(st, config=st.config.model_copy(update={"path": str(out)}))

        return replace(compiled, stages=tuple(stage(s) for s in compiled.stages), dead_letter=None)

    def prepare(self) -> CompiledPipeline:
        """The pipeline as the test runs it.

        Raises:
            _Invalid: the test or its spec is invalid.
        """
        overrides = self._overrides()
        first = self._load(overrides, check_sources=False)
        self._check_names(first)
        overrides += self._inputs(first) + self._stores(first)
        loaded = self._load(overrides, check_sources=True)
        try:
            compiled = compile_pipeline(loaded)
        except SpecError as exc:
            raise _Invalid([Problem.of(exc)]) from None
        self._offline(compiled)
        return self._sandboxed(compiled)

    # -- running -----------------------------------------------------------

    async def _run(self, compiled: CompiledPipeline, obs: Observed) -> float:
        clock = VirtualClock()
        state = self.scratch / "state"
        notices: list[str] = []

        def tap(stage_id: str, item: Item) -> None:
            obs.outputs.setdefault(stage_id, []).append(plain(item.to_json()))

        async with RunResources(state, clock, http_transport=_Offline(), notify=notices.append) as resources:
            options = RunOptions(
                fresh=True,
                seed=self.test.seed,
                clock=clock,
                listeners=[obs.events.append],
                state_dir=state,
                resources=lambda _dir, _clock: contextlib.nullcontext(resources),
                notify=notices.append,
                taps=[tap],
                adapters={},
            )
            running = asyncio.ensure_future(Runner(compiled, options).run())
            done, _ = await asyncio.wait({running}, timeout=self.test.timeout)
            if not done:
                running.cancel()
                # The runner's task group may end the cancellation as a group: either way it is over.
                with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup):
                    await running
                raise _Unfinished(self.test.timeout, clock.now())
            report = running.result()
            obs.report = plain(report.to_json())
            if report.dead_letter:
                obs.dead_letters = _read_jsonl(Path(report.dead_letter))
            for q in self.test.expect.query:
                try:
                    answer = await answer_question(
                        compiled, q.question, top_k=q.top_k, options=replace(options, taps=[])
                    )
                except FuncpipeError as exc:
                    obs.answers.append(str(exc))
                else:
                    obs.answers.append(plain(answer.to_json()))
        return clock.now()

    def run(self) -> CaseResult:
        """Run the test and check its expectations."""
        t0 = time.perf_counter()
        name = self.test.name
        file = str(self.loaded.path)
        try:
            compiled = self.prepare()
        except _Invalid as exc:
            return CaseResult(file, name, "error", exc.problems, time.perf_counter() - t0)
        obs = Observed()
        try:
            virtual = drive(
                lambda: self._run(compiled, obs),
                loop_factory=lambda: VirtualEventLoop(stall_timeout=STALL_SECONDS),
            )
        except RunError as exc:
            # The run could not start (a missing variable, an unwritable path): nothing to compare.
            problem = self._problem((*self.at, "name"), f"the run could not start: {exc}")
            return CaseResult(file, name, "failed", [problem], time.perf_counter() - t0)
        except _Unfinished as exc:
            problem = self._problem(
                (*self.at, "timeout") if "timeout" in self.test.model_fields_set else (*self.at, "name"),
                str(exc),
                "a stage waits for something that never comes; or raise the test's timeout: (virtual time)",
            )
            return CaseResult(file, name, "failed", [problem], time.perf_counter() - t0, exc.virtual)
        except VirtualTimeStall as exc:
            problem = self._problem(
                (*self.at, "name"),
                f"the run stalled: {exc}",
                "a stage waits on something that is neither the clock nor a thread (a socket, another process)",
            )
            return CaseResult(file, name, "failed", [problem], time.perf_counter() - t0)
        except Exception as exc:  # one test's crash must not stop the others
            problem = self._problem((*self.at, "name"), f"the run raised {type(exc).__name__}: {exc}")
            return CaseResult(file, name, "failed", [problem], time.perf_counter() - t0)
        problems, snapshots = check(self.loaded, self.index, obs)
        if obs.report.get("status") == "error" and not problems and self.test.expect.report is None:
            # A run that failed as a whole passes only a test that says it expects it.
            problems.append(
                self._problem(
                    (*self.at, "name"),
                    f"the run failed: {obs.report.get('message')}",
                    "expect it with expect: {report: {status: error}}",
                )
            )
        return CaseResult(
            file, name, "failed" if problems else "passed", problems, time.perf_counter() - t0, virtual, snapshots
        )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            obj = json.loads(line)
            if isinstance(obj, dict):
                out.append(obj)
    return out


def run_case(loaded: LoadedTestFile, index: int, scratch: Path) -> CaseResult:
    """Run test ``index`` of ``loaded`` in the fresh directory ``scratch``."""
    return Case(loaded, index, scratch).run()


__all__ = ["STALL_SECONDS", "Case", "run_case"]
