"""The exceptions funcpipe raises, in two roots.

    FuncpipeError
     ├── SpecError          your spec is wrong            (exit code 2)
     │    └── SpecErrors    several located SpecErrors at once
     └── RunError           the run failed                (exit code 1)
          ├── ResourceError a client, pool or server could not be opened
          ├── FailFast      on_error: fail_fast stopped the run at the first failed item
          └── BudgetExceeded the estimate exceeds a budget: not started (exit code 4)

A run a budget stopped is not an exception: its report says ``budget_exhausted``
and its exit code is `BUDGET_EXHAUSTED_EXIT` (3).

Inside a stream, failures are `funcpipe.core.ErrInfo` values, never these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class FuncpipeError(Exception):
    """Base of every funcpipe exception."""

    exit_code = 1


@dataclass(frozen=True)
class Location:
    """Where in which file: 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SpecError(FuncpipeError):
    """The spec is wrong. Carries its location, dotted path, message and a hint."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str = "<spec>",
        line: int = 1,
        col: int = 1,
        path: str = "",
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.path = path
        self.hint = hint
        super().__init__(self.render())

    @property
    def location(self) -> Location:
        """The error's location."""
        return Location(self.file, self.line, self.col)

    def render(self) -> str:
        """``file:line:col: path: message`` (the hint is separate)."""
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {where}{self.message}"

    def to_json(self) -> dict[str, object]:
        """A JSON-able form of this error."""
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class SpecErrors(SpecError):
    """Several located errors found in one pass."""

    def __init__(self, errors: Sequence[SpecError]) -> None:
        if not errors:
            raise ValueError("SpecErrors needs at least one error")
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(
            first.message,
            file=first.file,
            line=first.line,
            col=first.col,
            path=first.path,
            hint=first.hint,
        )

    def render(self) -> str:
        """Every error, one per line."""
        return "\n".join(e.render() for e in getattr(self, "errors", [])) or super().render()


class RunError(FuncpipeError):
    """The run failed."""

    exit_code = 1


class ResourceError(RunError):
    """A client, pool or server could not be opened."""


class FailFast(RunError):
    """``on_error: fail_fast`` stopped the run at the first failed item."""


class BudgetExceeded(RunError):
    """The dry-run estimate of a run exceeds one of its budgets, so it was not started (``--force`` overrides)."""

    exit_code = 4


BUDGET_EXHAUSTED_EXIT = 3
"""The exit code of a run stopped by an exhausted budget (its report's status is ``budget_exhausted``)."""
