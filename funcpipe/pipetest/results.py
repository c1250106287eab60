"""What running pipeline tests gives: each test's outcome, its failures with their places, and the totals.

Plain, picklable data: tests run in worker processes and their results come
back to the parent. `TestResults` renders them as text, JSON, JUnit XML or
GitHub annotations (`funcpipe.pipetest.output`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from funcpipe.errors import SpecError

Status = Literal["passed", "failed", "error"]
"""``passed``; ``failed`` (an expectation did not hold, or the run could not start);
``error`` (the test file or its spec is invalid)."""

SpecPath = tuple[str | int, ...]
"""A path into the test file: ``("tests", 0, "expect", "stages", "chunk", "count")``."""


@dataclass(frozen=True)
class Problem:
    """A located message: an expectation that failed, or an error in the test file or spec.

    Attributes:
        message: what is wrong.
        file: the file it is in.
        line: 1-based line.
        col: 1-based column.
        path: the dotted path of the value (``tests[0].expect.stages.chunk.count``).
        hint: how to fix it, for errors.
        diff: expected against actual, as a unified diff, for failed expectations.
    """

    message: str
    file: str
    line: int = 1
    col: int = 1
    path: str = ""
    hint: str | None = None
    diff: str | None = None

    @classmethod
    def of(cls, error: SpecError) -> Problem:
        """The problem of a located spec or test-file error."""
        return cls(error.message, error.file, error.line, error.col, error.path, error.hint)

    @property
    def location(self) -> str:
        """``file:line:col``."""
        return f"{self.file}:{self.line}:{self.col}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
            "diff": self.diff,
        }


@dataclass(frozen=True)
class Snapshot:
    """What ``--update`` writes: the value the run produced for one exact expectation.

    Attributes:
        path: where the expectation is in the test file.
        value: what the run produced, as plain data.
    """

    path: SpecPath
    value: Any


@dataclass
class CaseResult:
    """One test's outcome.

    Attributes:
        file: its test file.
        name: its name (``None`` when the test file itself is invalid).
        status: passed, failed or error.
        problems: its failed expectations (failed) or errors (error).
        duration: real seconds it took.
        virtual: virtual seconds its run took (retry waits, timeouts, batching delays).
        snapshots: the produced value of each exact expectation, for ``--update``.
    """

    __test__ = False  # not a pytest test class

    file: str
    name: str | None
    status: Status
    problems: list[Problem] = field(default_factory=list)
    duration: float = 0.0
    virtual: float = 0.0
    snapshots: list[Snapshot] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "file": self.file,
            "name": self.name,
            "status": self.status,
            "duration_s": round(self.duration, 4),
            "virtual_s": round(self.virtual, 4),
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass
class TestResults:
    """The outcome of ``funcpipe test``: every test's result, in file and test order.

    Attributes:
        cases: each test's result.
        duration: real seconds the whole run took.
        updated: test files ``--update`` rewrote.
    """

    __test__ = False  # not a pytest test class

    cases: list[CaseResult]
    duration: float = 0.0
    updated: list[str] = field(default_factory=list)

    def count(self, status: Status) -> int:
        """How many tests have ``status``."""
        return sum(1 for c in self.cases if c.status == status)

    @property
    def exit_code(self) -> int:
        """0 all passed, 1 a test failed, 2 a test file or its spec is invalid (or there was no test)."""
        if not self.cases or self.count("error"):
            return 2
        return 1 if self.count("failed") else 0

    @property
    def ok(self) -> bool:
        """True if every test passed."""
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        """``{"passed", "failed", "errors", "duration_s", "tests": [...]}``."""
        return {
            "passed": self.count("passed"),
            "failed": self.count("failed"),
            "errors": self.count("error"),
            "duration_s": round(self.duration, 4),
            "exit_code": self.exit_code,
            "updated": list(self.updated),
            "tests": [c.to_json() for c in self.cases],
        }

    def render(self, format: str = "text") -> str:
        """The results as ``text``, ``json``, ``junit`` (JUnit XML) or ``github`` (workflow annotations).

        Raises:
            ValueError: for an unknown format.
        """
        from funcpipe.pipetest.output import render

        return render(self, format)


__all__ = ["CaseResult", "Problem", "Snapshot", "SpecPath", "Status", "TestResults"]
