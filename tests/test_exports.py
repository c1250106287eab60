"""The public surfaces of `funcpipe` and `funcpipe.core` are exactly what we mean to export.

Importing either imports only the standard library; using the root API
imports no HTTP or database client and no terminal library.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import funcpipe
import funcpipe.core
import funcpipe.run

EXPECTED_CORE_EXPORTS = [
    "AsyncAction",
    "AsyncGen",
    "AsyncPlan",
    "Err",
    "ErrCode",
    "ErrInfo",
    "Item",
    "Ok",
    "ResilienceEnv",
    "Result",
    "RetryPolicy",
    "TimeoutPolicy",
    "UnwrapError",
    "Usage",
    "async_bind",
    "async_fail",
    "async_from_result",
    "async_gather",
    "async_gather_settled",
    "async_gen_and_then",
    "async_gen_bracket",
    "async_gen_empty",
    "async_gen_filter",
    "async_gen_flat_map",
    "async_gen_from_iterable",
    "async_gen_from_list",
    "async_gen_from_plan",
    "async_gen_from_results",
    "async_gen_gather",
    "async_gen_map",
    "async_gen_map_action",
    "async_gen_return",
    "async_gen_using",
    "async_lift",
    "async_lift_call",
    "async_map",
    "async_map_err",
    "async_pure",
    "async_with_resilience",
    "canonical_json",
    "collect",
    "for_each_par",
    "for_each_par_settled",
    "lift_async_item",
    "lift_sync",
    "lift_sync_gen_with_executor",
    "lift_sync_with_executor",
    "metering",
    "partition",
    "race",
    "report_usage",
    "resilient_mapper",
    "stable_id",
    "user_error",
    "zip_par",
]

FORBIDDEN_IN_CORE = ("httpx", "asyncpg", "click", "rich")


def test_core_exports_exactly_the_intended_names() -> None:
    assert funcpipe.core.__all__ == EXPECTED_CORE_EXPORTS


def test_core_all_is_sorted() -> None:
    assert funcpipe.core.__all__ == sorted(funcpipe.core.__all__)


def test_every_core_class_and_function_is_defined_in_core() -> None:
    members = [getattr(funcpipe.core, name) for name in funcpipe.core.__all__]
    defined = [m for m in members if inspect.isclass(m) or inspect.isfunction(m)]
    assert [m.__qualname__ for m in defined if not m.__module__.startswith("funcpipe.core.")] == []


# Run in a fresh interpreter: this test process has imported far more already.
_PROBE = (
    "import sys, json; before = set(sys.modules); import funcpipe.core; "
    "print(json.dumps(sorted(set(sys.modules) - before)))"
)


def _modules_imported_by_core() -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    modules: list[str] = json.loads(out.stdout)
    return modules


def test_importing_core_imports_none_of_the_io_libraries() -> None:
    assert [m for m in _modules_imported_by_core() if m.split(".")[0] in FORBIDDEN_IN_CORE] == []


def test_importing_core_imports_only_the_standard_library() -> None:
    outside = [
        m
        for m in _modules_imported_by_core()
        if m.split(".")[0] not in sys.stdlib_module_names and m != "funcpipe" and not m.startswith("funcpipe.core")
    ]
    assert outside == []


EXPECTED_ROOT_EXPORTS = [
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


def test_root_exports_exactly_the_intended_names() -> None:
    assert funcpipe.__all__ == EXPECTED_ROOT_EXPORTS


def test_root_all_is_sorted_and_every_name_resolves() -> None:
    assert funcpipe.__all__ == sorted(funcpipe.__all__)
    assert all(getattr(funcpipe, name) is not None for name in funcpipe.__all__)
    assert set(funcpipe.__all__) <= set(dir(funcpipe))


def test_root_reexports_are_the_objects_of_their_modules() -> None:
    import funcpipe.core
    import funcpipe.errors
    import funcpipe.run.query

    assert funcpipe.ErrInfo is funcpipe.core.ErrInfo
    assert funcpipe.SpecErrors is funcpipe.errors.SpecErrors
    assert funcpipe.Answer is funcpipe.run.query.Answer


def test_an_unknown_root_name_is_an_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError, match="'nope'"):
        funcpipe.nope  # noqa: B018


EXPECTED_RUN_EXPORTS = [
    "RunOptions",
    "RunReport",
    "Runner",
    "StageReport",
    "drive",
    "perform",
    "perform_async",
    "run_pipeline",
]


def test_run_exports_exactly_the_intended_names() -> None:
    assert funcpipe.run.__all__ == EXPECTED_RUN_EXPORTS


def _imported_by(code: str) -> list[str]:
    probe = f"import sys, json; before = set(sys.modules); {code}; print(json.dumps(sorted(set(sys.modules) - before)))"
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=repo)
    modules: list[str] = json.loads(out.stdout)
    return modules


def test_importing_funcpipe_imports_only_the_standard_library() -> None:
    outside = [
        m for m in _imported_by("import funcpipe") if m.split(".")[0] not in sys.stdlib_module_names and m != "funcpipe"
    ]
    assert outside == []


def test_loading_a_pipeline_imports_none_of_the_io_libraries() -> None:
    used = _imported_by(
        "import funcpipe; p = funcpipe.load('pipelines/rag.yaml'); p.stages; p.render('mermaid'); p.estimate()"
    )
    assert "funcpipe._api" in used
    assert [m for m in used if m.split(".")[0] in FORBIDDEN_IN_CORE] == []
