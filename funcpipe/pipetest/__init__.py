"""Pipeline tests: ``*.test.yaml`` files beside specs, run on virtual time (``funcpipe test``).

A test file names a spec and holds tests; each runs the real compiled
pipeline through the real runner with the test's inputs and adapter
overrides (local kinds, or the ``scripted`` fake of an HTTP provider), on a
`funcpipe.testing.VirtualEventLoop` and offline, then checks what each
stage emitted, the dead letters, the report, the policies' behaviour and
what queries return. See docs/testing.md.

    from funcpipe.pipetest import run_tests

    results = run_tests(["pipelines"])
    print(results.render("text"))
    raise SystemExit(results.exit_code)

Test files are independent, so they run in parallel worker processes
(``jobs``); each test gets its own scratch directory and event loop.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from funcpipe.errors import SpecErrors
from funcpipe.pipetest._harness import run_case
from funcpipe.pipetest._load import SUFFIXES, LoadedTestFile, load_test_file
from funcpipe.pipetest._update import apply_snapshots
from funcpipe.pipetest.results import CaseResult, Problem, Snapshot, TestResults
from funcpipe.spec.documents import format_path

_SKIPPED_DIRS = frozenset({".git", ".funcpipe", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".nox"})


def discover(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[CaseResult]]:
    """The test files under ``paths``, and an error for each path that does not exist.

    A file given is run whatever its name; directories are searched for
    ``*.test.yaml`` and ``*.test.yml``, skipping hidden directories, virtual
    environments and ``.funcpipe/`` state.
    """
    found: list[Path] = []
    bad: list[CaseResult] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
                found += [Path(root) / f for f in sorted(files) if f.endswith(SUFFIXES)]
        elif p.is_file():
            found.append(p)
        else:
            problem = Problem(f"{p} does not exist", str(p), hint="give test files, or directories to search for them")
            bad.append(CaseResult(str(p), None, "error", [problem]))
    unique = list(dict.fromkeys(found))
    return unique, bad


def run_file(path: Path) -> list[CaseResult]:
    """Run every test of the test file at ``path``, one after the other, each in a fresh scratch directory."""
    try:
        loaded = load_test_file(path)
    except SpecErrors as exc:
        return [CaseResult(str(path), None, "error", [Problem.of(e) for e in exc.errors])]
    results: list[CaseResult] = []
    for index in range(len(loaded.model.tests)):
        with tempfile.TemporaryDirectory(prefix="funcpipe-test-") as scratch:
            results.append(run_case(loaded, index, Path(scratch)))
    return results


def _update(results: list[CaseResult]) -> list[str]:
    """Write the snapshots of failed exact expectations; the cases they fix entirely pass."""
    by_file: dict[str, list[Snapshot]] = {}
    for case in results:
        if case.status != "failed":
            continue
        failed = {p.path for p in case.problems}
        fixes = [s for s in case.snapshots if format_path(s.path) in failed]
        by_file.setdefault(case.file, []).extend(fixes)
        fixed = {format_path(s.path) for s in fixes}
        if fixes and failed <= fixed:
            case.status = "passed"
            case.problems = []
    return [file for file, snaps in by_file.items() if snaps and apply_snapshots(Path(file), snaps)]


def run_tests(
    paths: Sequence[str | os.PathLike[str]] = (".",), *, jobs: int | None = None, update: bool = False
) -> TestResults:
    """Discover and run pipeline test files.

    Args:
        paths: test files, and directories searched for ``*.test.yaml`` (default: the current directory).
        jobs: worker processes running test files in parallel (default: the CPU count;
            1 runs them in this process).
        update: rewrite the failed exact expectations (counts, items, dead letters,
            waits, report values...) with what the runs produced, as snapshots; a
            test whose every failure was rewritten passes.

    Returns:
        Every test's result; `TestResults.exit_code` is 0 (all passed), 1 (a
        test failed) or 2 (a test file or its spec is invalid, or no test was found).
    """
    t0 = time.perf_counter()
    files, results = discover(paths)
    workers = min(jobs or os.cpu_count() or 1, len(files))
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for cases in pool.map(run_file, files):
                results.extend(cases)
    else:
        for f in files:
            results.extend(run_file(f))
    updated = _update(results) if update else []
    return TestResults(results, time.perf_counter() - t0, updated)


__all__ = [
    "SUFFIXES",
    "CaseResult",
    "LoadedTestFile",
    "Problem",
    "TestResults",
    "discover",
    "load_test_file",
    "run_file",
    "run_tests",
]
