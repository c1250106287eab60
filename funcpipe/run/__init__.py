"""The runner: the only code that drives plans, owns resources and handles signals."""

from __future__ import annotations

from funcpipe.run._driver import drive, perform, perform_async
from funcpipe.run.report import RunReport, StageReport
from funcpipe.run.runner import Runner, RunOptions, run_pipeline

__all__ = [
    "RunOptions",
    "RunReport",
    "Runner",
    "StageReport",
    "drive",
    "perform",
    "perform_async",
    "run_pipeline",
]
