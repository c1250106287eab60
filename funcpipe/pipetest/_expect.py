"""Checking one test's expectations against what its run produced.

Each failed expectation is a `Problem` at the place the expectation is
written, with a readable diff; each exact expectation also yields a
`Snapshot` of what the run produced, which ``--update`` writes back.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from funcpipe.pipetest._load import LoadedTestFile
from funcpipe.pipetest._match import aligned, diff, field_of, plain, same, same_multiset, short, subset, unmet
from funcpipe.pipetest.models import Condition, Expect, HitsExpect, PolicyExpect, QueryExpect, StageExpect
from funcpipe.pipetest.results import Problem, Snapshot, SpecPath
from funcpipe.policy.events import Event
from funcpipe.policy.models import format_duration

_MAX_LISTED = 5


@dataclass
class Observed:
    """What one test's run produced.

    Attributes:
        outputs: by stage id, the JSON form of every item it emitted, in order.
        events: every policy and stage event.
        report: the run's JSON report.
        dead_letters: the dead-letter records (``{"stage", "error": {"code", "msg"}, ...}``).
        answers: per expected query, its answer's JSON, or the error message if it failed.
    """

    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any] | str] = field(default_factory=list)


class _Checker:
    def __init__(self, loaded: LoadedTestFile, index: int) -> None:
        self.loaded = loaded
        self.base: SpecPath = ("tests", index, "expect")
        self.problems: list[Problem] = []
        self.snapshots: list[Snapshot] = []

    def fail(
        self, where: SpecPath, message: str, *, expected: object = None, actual: object = None, show_diff: bool = False
    ) -> None:
        err = self.loaded.error((*self.base, *where), message)
        self.problems.append(
            Problem(
                err.message, err.file, err.line, err.col, err.path, diff=diff(expected, actual) if show_diff else None
            )
        )

    def snap(self, where: SpecPath, value: object) -> None:
        self.snapshots.append(Snapshot((*self.base, *where), plain(value)))

    def exact(self, where: SpecPath, what: str, expected: object, actual: object) -> None:
        self.snap(where, actual)
        if not same(plain(expected), plain(actual)):
            multi = isinstance(expected, list | Mapping) or isinstance(actual, list | Mapping)
            self.fail(
                where,
                f"{what}: expected {short(expected)}, got {short(actual)}",
                expected=expected,
                actual=actual,
                show_diff=multi,
            )

    # -- items ------------------------------------------------------------

    def items(
        self, where: SpecPath, what: str, exp: StageExpect | HitsExpect, items: list[dict[str, Any]], data_key: str
    ) -> None:
        if exp.count is not None:
            self.exact((*where, "count"), f"{what}: count", exp.count, len(items))
        if isinstance(exp, StageExpect) and exp.items is not None:
            data = [it.get(data_key) for it in items]
            self.snap((*where, "items"), data)
            expected = plain(exp.items)
            if not same_multiset(expected, plain(data)):
                self.fail(
                    (*where, "items"),
                    f"{what}: the items' {data_key} differ ({len(expected)} expected, {len(data)} emitted)",
                    expected=expected,
                    actual=aligned(expected, plain(data)),
                    show_diff=True,
                )
        for i, pattern in enumerate(exp.contains or []):
            if not any(subset(plain(pattern), it) for it in items):
                closest = items[:_MAX_LISTED]
                self.fail(
                    (*where, "contains", i),
                    f"{what}: no item matches {short(pattern)} (of {len(items)})",
                    expected=pattern,
                    actual=closest,
                    show_diff=True,
                )
        for name, cond in (exp.where or {}).items():
            self.where((*where, "where", name), what, name, cond, items)

    def where(self, where: SpecPath, what: str, name: str, cond: Condition, items: list[dict[str, Any]]) -> None:
        bad = [(n, why) for n, it in enumerate(items) for why in [unmet(cond, field_of(it, name))] if why]
        if bad:
            lines = [f"item {n}: {name} {'; '.join(why)}" for n, why in bad[:_MAX_LISTED]]
            more = f" (and {len(bad) - _MAX_LISTED} more)" if len(bad) > _MAX_LISTED else ""
            self.fail(where, f"{what}: {len(bad)} of {len(items)} items fail {name}: " + " | ".join(lines) + more)

    # -- the parts of `expect` -------------------------------------------

    def stages(self, expect: Expect, obs: Observed) -> None:
        for sid, exp in expect.stages.items():
            self.items(("stages", sid), f"stage {sid}", exp, obs.outputs.get(sid, []), "data")

    def dead_letters(self, expect: Expect, obs: Observed) -> None:
        if expect.dead_letters is None:
            return
        groups: Counter[tuple[str, str]] = Counter(
            (str(d.get("stage")), str((d.get("error") or {}).get("code"))) for d in obs.dead_letters
        )
        actual = [{"stage": s, "code": c, "count": n} for (s, c), n in sorted(groups.items())]
        expected = [{"stage": d.stage, "code": d.code, "count": d.count} for d in expect.dead_letters]
        self.snap(("dead_letters",), actual)
        if not same_multiset(expected, actual):
            self.fail(
                ("dead_letters",),
                f"dead letters: expected {sum(d.count for d in expect.dead_letters)}, got {len(obs.dead_letters)}",
                expected=expected,
                actual=aligned(expected, actual),
                show_diff=True,
            )
        for i, d in enumerate(expect.dead_letters):
            if d.message is None:
                continue
            msgs = [
                str((x.get("error") or {}).get("msg", ""))
                for x in obs.dead_letters
                if x.get("stage") == d.stage and (x.get("error") or {}).get("code") == d.code
            ]
            missing = [m for m in msgs if d.message not in m]
            if missing:
                self.fail(
                    ("dead_letters", i, "message"), f"dead letter message lacks {d.message!r}: {short(missing[0])}"
                )

    def report(self, expect: Expect, obs: Observed) -> None:
        if expect.report is None:
            return
        actual = dict(obs.report)
        # Stages are a list in the report; tests name them by id.
        actual["stages"] = {s.get("id"): s for s in obs.report.get("stages", [])}
        self._subset(("report",), "report", plain(expect.report), actual)

    def _subset(self, where: SpecPath, what: str, pattern: object, actual: object) -> None:
        if isinstance(pattern, Mapping):
            if not isinstance(actual, Mapping):
                self.fail(where, f"{what}: expected a mapping, got {short(actual)}")
                return
            for key, value in pattern.items():
                if key not in actual:
                    known = ", ".join(sorted(str(k) for k in actual))
                    self.fail((*where, key), f"{what}.{key}: the report has no {key!r} (it has {known})")
                else:
                    self._subset((*where, key), f"{what}.{key}", value, actual[key])
            return
        self.exact(where, what, pattern, actual)

    def policy(self, expect: Expect, obs: Observed) -> None:
        for sid, exp in expect.policy.items():
            self._policy(sid, exp, [e for e in obs.events if e.stage == sid])

    def _policy(self, sid: str, exp: PolicyExpect, events: Sequence[Event]) -> None:
        what = f"stage {sid}'s policy"
        where: SpecPath = ("policy", sid)
        attempts = [e for e in events if e.kind == "attempt"]
        waits = [e.duration for e in events if e.kind == "wait"]
        if exp.attempts is not None:
            self.exact((*where, "attempts"), f"{what}: attempts", exp.attempts, len(attempts))
        if exp.retries is not None:
            retries = sum(1 for e in attempts if e.attempt > 1)
            self.exact((*where, "retries"), f"{what}: retries", exp.retries, retries)
        if exp.waits is not None:
            self.snap((*where, "waits"), [format_duration(round(w, 6)) for w in waits])
            if len(exp.waits) != len(waits) or any(abs(a - b) > 1e-3 for a, b in zip(exp.waits, waits, strict=False)):
                shown_exp = [format_duration(w) for w in exp.waits]
                shown_act = [format_duration(round(w, 6)) for w in waits]
                self.fail(
                    (*where, "waits"), f"{what}: waits differ", expected=shown_exp, actual=shown_act, show_diff=True
                )
        if exp.waited is not None:
            total = sum(waits)
            self.snap((*where, "waited"), format_duration(round(total, 6)))
            if abs(total - exp.waited) > 1e-3:
                self.fail(
                    (*where, "waited"),
                    f"{what}: waited {format_duration(round(total, 6))} in all, expected {format_duration(exp.waited)}",
                )
        if exp.failures is not None:
            codes = Counter(str(e.code) for e in events if e.kind == "failure")
            self.exact((*where, "failures"), f"{what}: failures", exp.failures, dict(sorted(codes.items())))
        if exp.breaker is not None:
            states = [str(e.code) for e in events if e.kind == "breaker"]
            self.exact((*where, "breaker"), f"{what}: breaker transitions", exp.breaker, states)
        if exp.limited is not None:
            self.exact(
                (*where, "limited"),
                f"{what}: rate-limited calls",
                exp.limited,
                sum(1 for e in events if e.kind == "limited"),
            )

    def queries(self, expect: Expect, obs: Observed) -> None:
        for i, (q, got) in enumerate(zip(expect.query, obs.answers, strict=True)):
            self._query(("query", i), q, got)

    def _query(self, where: SpecPath, q: QueryExpect, got: dict[str, Any] | str) -> None:
        what = f"query {q.question!r}"
        if isinstance(got, str):
            if q.error is None:
                self.fail((*where, "question"), f"{what} failed: {got}")
            elif q.error not in got:
                self.fail((*where, "error"), f"{what} failed, but not with {q.error!r}: {got}")
            return
        if q.error is not None:
            self.fail((*where, "error"), f"{what} was expected to fail with {q.error!r}, but it answered")
            return
        hits: list[dict[str, Any]] = list(got.get("sources", []))
        if q.hits is not None:
            self.items((*where, "hits"), f"{what}: hits", q.hits, hits, "text")
            if q.hits.sources is not None:
                names = [str((h.get("meta") or {}).get("path") or h.get("source_id")) for h in hits]
                self.exact((*where, "hits", "sources"), f"{what}: hit sources", q.hits.sources, names)
        if q.answer is not None:
            text = str(got.get("answer", ""))
            a = q.answer
            if a.equals is not None:
                self.exact((*where, "answer", "equals"), f"{what}: answer", a.equals, text)
            for j, piece in enumerate(a.contains or []):
                if piece not in text:
                    self.fail(
                        (*where, "answer", "contains", j), f"{what}: the answer lacks {piece!r}: {short(text, 200)}"
                    )
            if a.matches is not None and re.search(a.matches, text) is None:
                self.fail(
                    (*where, "answer", "matches"),
                    f"{what}: the answer does not match {a.matches!r}: {short(text, 200)}",
                )


def check(loaded: LoadedTestFile, index: int, obs: Observed) -> tuple[list[Problem], list[Snapshot]]:
    """The failed expectations of test ``index`` of ``loaded``, and the snapshot of each exact one."""
    c = _Checker(loaded, index)
    expect = loaded.model.tests[index].expect
    c.stages(expect, obs)
    c.dead_letters(expect, obs)
    c.report(expect, obs)
    c.policy(expect, obs)
    c.queries(expect, obs)
    return sorted(c.problems, key=lambda p: (p.line, p.col)), c.snapshots


__all__ = ["Observed", "check"]
