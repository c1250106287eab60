"""Pipeline test results for people (text), tools (JSON), CI servers (JUnit XML) and GitHub Actions."""

from __future__ import annotations

import json
import textwrap
from xml.etree import ElementTree as ET

from funcpipe.pipetest.results import CaseResult, Problem, TestResults

FORMATS = ("text", "json", "junit", "github")
"""The output formats of ``funcpipe test``."""

_LABEL = {"passed": "PASS", "failed": "FAIL", "error": "ERROR"}


def _title(case: CaseResult) -> str:
    return f"{case.file}::{case.name}" if case.name is not None else case.file


def _problem_text(p: Problem) -> str:
    where = f"{p.path}: " if p.path else ""
    lines = [f"{p.location}: {where}{p.message}"]
    if p.hint:
        lines.append(f"    hint: {p.hint}")
    if p.diff:
        lines.append(textwrap.indent(p.diff, "    "))
    return "\n".join(lines)


def _timing(case: CaseResult) -> str:
    virtual = f", {case.virtual:.3g}s virtual" if case.virtual >= 0.001 else ""
    return f" ({case.duration:.2f}s{virtual})"


def render_text(results: TestResults) -> str:
    """One line per test, each failure or error under its test with its place, hint and diff, then the totals."""
    out: list[str] = []
    for case in results.cases:
        out.append(f"{_LABEL[case.status]} {_title(case)}{_timing(case) if case.status != 'error' else ''}")
        out += [textwrap.indent(_problem_text(p), "  ") for p in case.problems]
    summary = (
        f"{results.count('passed')} passed, {results.count('failed')} failed, "
        f"{results.count('error')} errors in {results.duration:.2f}s"
    )
    if not results.cases:
        summary = "no test files found (their names end in .test.yaml)"
    out.append(summary)
    out += [f"updated {f}" for f in results.updated]
    return "\n".join(out)


def render_junit(results: TestResults) -> str:
    """JUnit XML: a test suite per test file, a test case per test; failures carry their place and diff."""
    root = ET.Element(
        "testsuites",
        tests=str(len(results.cases)),
        failures=str(results.count("failed")),
        errors=str(results.count("error")),
        time=f"{results.duration:.3f}",
    )
    suites: dict[str, ET.Element] = {}
    for case in results.cases:
        suite = suites.get(case.file)
        if suite is None:
            suite = suites[case.file] = ET.SubElement(root, "testsuite", name=case.file)
        tc = ET.SubElement(
            suite, "testcase", name=case.name or "(test file)", classname=case.file, time=f"{case.duration:.3f}"
        )
        if case.status != "passed":
            tag = "failure" if case.status == "failed" else "error"
            first = case.problems[0] if case.problems else None
            el = ET.SubElement(tc, tag, message=f"{first.location}: {first.message}" if first else case.status)
            el.text = "\n\n".join(_problem_text(p) for p in case.problems)
    for suite in suites.values():
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(len(suite.findall("testcase/failure"))))
        suite.set("errors", str(len(suite.findall("testcase/error"))))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(results: TestResults) -> str:
    """One ``::error`` workflow command per failure or error, at its file, line and column, then the totals."""
    out: list[str] = []
    for case in results.cases:
        for p in case.problems:
            where = f"{p.path}: " if p.path else ""
            body = f"{where}{p.message}" + (f"\nhint: {p.hint}" if p.hint else "") + (f"\n{p.diff}" if p.diff else "")
            title = f"funcpipe test: {case.name}" if case.name else "funcpipe test"
            props = f"file={_escape_property(p.file)},line={p.line},col={p.col},title={_escape_property(title)}"
            out.append(f"::error {props}::{_escape_data(body)}")
    out.append(f"{results.count('passed')} passed, {results.count('failed')} failed, {results.count('error')} errors")
    return "\n".join(out)


def render(results: TestResults, format: str = "text") -> str:
    """``results`` in ``format`` (one of `FORMATS`).

    Raises:
        ValueError: for an unknown format.
    """
    if format == "text":
        return render_text(results)
    if format == "json":
        return json.dumps(results.to_json(), ensure_ascii=False, indent=2)
    if format == "junit":
        return render_junit(results)
    if format == "github":
        return render_github(results)
    raise ValueError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "render", "render_github", "render_junit", "render_text"]
