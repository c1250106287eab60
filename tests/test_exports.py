"""The public surface of `funcpipe.core` is exactly what we mean to export, and stays stdlib-only."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import funcpipe.core

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
    "partition",
    "race",
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
