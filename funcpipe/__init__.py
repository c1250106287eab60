"""funcpipe: declarative async pipelines for flaky external services.

The Python API, in full (see docs/python.md)::

    import funcpipe

    pipeline = funcpipe.load("pipelines/rag.yaml", set={"params.corpus": "docs"})
    report = pipeline.run()                    # or: await pipeline.run_async()
    answer = pipeline.query("how do I switch the embedding provider?")
    print(pipeline.render("mermaid"), pipeline.estimate().least_duration)
    results = funcpipe.run_tests(["pipelines"])  # the *.test.yaml files (funcpipe test)

Importing ``funcpipe`` imports only the standard library: each name below is
imported from its module on first use, and the HTTP and database clients only
when a run needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from funcpipe._api import Estimate, Pipeline, check, load
    from funcpipe._session import Display, RunSession, RunSettings, StageInfo
    from funcpipe.core import ErrCode, ErrInfo, Item
    from funcpipe.errors import FuncpipeError, RunError, SpecError, SpecErrors
    from funcpipe.pipetest import run_tests
    from funcpipe.pipetest.results import TestResults
    from funcpipe.policy.events import Event, EventSink
    from funcpipe.policy.models import Policy
    from funcpipe.ports import QueryHit
    from funcpipe.run.accounting import StageStats
    from funcpipe.run.estimate import StageEstimate
    from funcpipe.run.query import Answer
    from funcpipe.run.report import RunReport, StageReport
    from funcpipe.spec import SpecCheck

__version__ = "0.1.0"

_HOMES = {
    "Answer": "funcpipe.run.query",
    "Display": "funcpipe._session",
    "ErrCode": "funcpipe.core",
    "ErrInfo": "funcpipe.core",
    "Estimate": "funcpipe._api",
    "Event": "funcpipe.policy.events",
    "EventSink": "funcpipe.policy.events",
    "FuncpipeError": "funcpipe.errors",
    "Item": "funcpipe.core",
    "Pipeline": "funcpipe._api",
    "Policy": "funcpipe.policy.models",
    "QueryHit": "funcpipe.ports",
    "RunError": "funcpipe.errors",
    "RunReport": "funcpipe.run.report",
    "RunSession": "funcpipe._session",
    "RunSettings": "funcpipe._session",
    "SpecCheck": "funcpipe.spec",
    "SpecError": "funcpipe.errors",
    "SpecErrors": "funcpipe.errors",
    "StageEstimate": "funcpipe.run.estimate",
    "StageInfo": "funcpipe._session",
    "StageReport": "funcpipe.run.report",
    "StageStats": "funcpipe.run.accounting",
    "TestResults": "funcpipe.pipetest.results",
    "check": "funcpipe._api",
    "load": "funcpipe._api",
    "run_tests": "funcpipe.pipetest",
}

__all__ = [
    "Answer",
    "Display",
    "ErrCode",
    "ErrInfo",
    "Estimate",
    "Event",
    "EventSink",
    "FuncpipeError",
    "Item",
    "Pipeline",
    "Policy",
    "QueryHit",
    "RunError",
    "RunReport",
    "RunSession",
    "RunSettings",
    "SpecCheck",
    "SpecError",
    "SpecErrors",
    "StageEstimate",
    "StageInfo",
    "StageReport",
    "StageStats",
    "TestResults",
    "__version__",
    "check",
    "load",
    "run_tests",
]


def __getattr__(name: str) -> object:
    # PEP 562: `import funcpipe.core` (which imports this package first) must
    # stay stdlib-only, so the API's modules load when a name is first used.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'funcpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
