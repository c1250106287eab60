"""The test tiers: every test that starts a process, a database or a server is marked ``slow``.

``pytest -m "not slow"`` (``bash .ci/fast``) is the fast tier; CI runs
everything. A test is marked here, at collection, when it or a fixture it
uses reaches a real subprocess or the embedded PostgreSQL, directly or
through a helper of the tests package (one found by reading their source),
or when it lives in a directory whose tests all do. Marking by what a test
does, not by a list of names, keeps new tests in the right tier; a test can
still be marked ``@pytest.mark.slow`` by hand (long Hypothesis runs, say).

The fast tier also runs Hypothesis under the lighter ``fast`` profile
(``--hypothesis-profile=fast``): property tests that do not set their own
``max_examples`` try 25 examples instead of 100. CI runs the default profile.

This file only marks tests and registers that profile: it adds no fixture
and changes no behaviour of a run that does not select it.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import settings

settings.register_profile("fast", max_examples=25)

_TESTS = Path(__file__).resolve().parent

_WHOLLY_SLOW = ("e2e", "bench", "store", "plugins")
"""Directories of tests whose every test runs ``funcpipe``, PostgreSQL or a benchmark for real."""

_SLOW_FIXTURES = frozenset({"pg_dsn", "pg_resources"})
"""Fixtures that start (or join) the embedded PostgreSQL server."""

_SLOW_CODE = re.compile(
    r"\bsubprocess\.|\bsys\.executable\b|\bPopen\b|\bshared_dsn\(|\bstart_server\(|\bresources_for\(|"
    r"\bEmbeddedPostgres\b|\bpg_pool\(|\bos\.fork\(|\bpty\.|\bmultiprocessing\b"
)
"""What starts a process or the embedded server."""


@functools.cache
def _source(obj: Callable[..., Any] | type) -> str:
    # Cached: a parametrized test, a shared fixture or helper is read once.
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _slow_helpers(module: ModuleType, cache: dict[str, frozenset[str]]) -> frozenset[str]:
    """Names of the module's helper functions (its own or from ``tests``) and classes that reach slow code."""
    if module.__name__ in cache:
        return cache[module.__name__]
    helpers = {
        name: _source(obj)
        for name, obj in vars(module).items()
        if not name.startswith("test_")
        and (
            (inspect.isfunction(obj) and (obj.__module__ or "").startswith("tests"))
            # A helper class of the module itself (a pty terminal, say); the local
            # HTTP servers of tests.fakes are threads, fast enough for the fast tier.
            or (inspect.isclass(obj) and obj.__module__ == module.__name__)
        )
    }
    slow = {name for name, text in helpers.items() if _SLOW_CODE.search(text)}
    changed = True
    while changed:  # helpers calling slow helpers
        changed = False
        for name, text in helpers.items():
            if name not in slow and any(re.search(rf"\b{re.escape(s)}\(", text) for s in slow):
                slow.add(name)
                changed = True
    cache[module.__name__] = frozenset(slow)
    return cache[module.__name__]


def _reaches_slow_code(text: str, helpers: frozenset[str]) -> bool:
    return bool(_SLOW_CODE.search(text)) or any(re.search(rf"\b{re.escape(h)}\(", text) for h in helpers)


def _fixture_sources(item: pytest.Function) -> list[str]:
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}) if info is not None else {}
    out = []
    for name in item.fixturenames:
        for fixturedef in defs.get(name, ()):
            func = getattr(fixturedef, "func", None)
            if func is not None and (getattr(func, "__module__", "") or "").startswith("tests"):
                out.append(_source(func))
    return out


def _is_slow(item: pytest.Function, cache: dict[str, frozenset[str]]) -> bool:
    path = Path(str(item.path)).resolve()
    if path.is_relative_to(_TESTS) and path.relative_to(_TESTS).parts[0] in _WHOLLY_SLOW:
        return True
    if _SLOW_FIXTURES & set(item.fixturenames):
        return True
    module = getattr(item, "module", None)
    helpers = _slow_helpers(module, cache) if module is not None else frozenset()
    texts = [_source(item.function), *_fixture_sources(item)]
    return any(_reaches_slow_code(text, helpers) for text in texts)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tests (see the module docstring)."""
    cache: dict[str, frozenset[str]] = {}
    for item in items:
        if isinstance(item, pytest.Function) and item.get_closest_marker("slow") is None and _is_slow(item, cache):
            item.add_marker(pytest.mark.slow)
