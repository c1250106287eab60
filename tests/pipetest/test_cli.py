"""``funcpipe test`` as users run it: discovery, exit codes and its four output formats."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

from click.testing import CliRunner

import funcpipe
from funcpipe.cli import main
from tests.pipetest._support import line_of, write

PASSING = "- name: passes\n  inputs: {load: {path: docs}}\n  expect: {stages: {load: {count: 2}}}\n"
FAILING = "- name: fails\n  inputs: {load: {path: docs}}\n  expect: {stages: {load: {count: 5}}}\n"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funcpipe", "test", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_it_discovers_test_files_under_the_current_directory_and_skips_state_directories(tmp_path: Path) -> None:
    write(tmp_path, PASSING, name="a.test.yaml")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", FAILING, name="b.test.yml")
    (tmp_path / ".funcpipe").mkdir()
    write(tmp_path / ".funcpipe", FAILING, name="hidden.test.yaml")
    (tmp_path / "not-a-test.yaml").write_text("nonsense: [", encoding="utf-8")

    proc = _cli("--format", "json", cwd=tmp_path)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = json.loads(proc.stdout)
    assert sorted((Path(t["file"]).as_posix(), t["status"]) for t in results["tests"]) == [
        ("a.test.yaml", "passed"),
        ("sub/b.test.yml", "failed"),
    ]


def test_a_failure_prints_its_place_and_a_diff_and_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, FAILING)
    proc = _cli(str(path), cwd=tmp_path)

    assert proc.returncode == 1
    line = line_of(path, "count: 5")
    assert re.search(r"^FAIL .*small\.test\.yaml::fails \(", proc.stdout, re.M)
    assert f"small.test.yaml:{line}:" in proc.stdout
    assert "stage load: count: expected 5, got 2" in proc.stdout
    assert proc.stdout.rstrip().endswith("0 passed, 1 failed, 0 errors in " + proc.stdout.rstrip().split()[-1])


def test_exit_codes_are_0_passed_1_failed_2_invalid_or_nothing_found(tmp_path: Path) -> None:
    ok = write(tmp_path, PASSING, name="ok.test.yaml")
    bad = tmp_path / "bad.test.yaml"
    bad.write_text("spec: small.yaml\ntests: []\n", encoding="utf-8")
    runner = CliRunner()

    assert runner.invoke(main, ["test", "-j", "1", str(ok)]).exit_code == 0
    assert runner.invoke(main, ["test", "-j", "1", str(ok), str(bad)]).exit_code == 2
    assert runner.invoke(main, ["test", str(tmp_path / "missing.test.yaml")]).exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["test", str(empty)])
    assert result.exit_code == 2 and "no test files found" in result.output


def test_junit_output_is_xml_a_ci_server_reads(tmp_path: Path) -> None:
    write(tmp_path, PASSING + FAILING.replace("fails", "fails too"))
    report = tmp_path / "junit.xml"
    proc = _cli("--format", "junit", "-o", str(report), cwd=tmp_path)

    assert proc.returncode == 1
    suites = ET.parse(report).getroot()
    assert (suites.tag, suites.get("tests"), suites.get("failures"), suites.get("errors")) == (
        "testsuites",
        "2",
        "1",
        "0",
    )
    [suite] = suites
    cases = {c.get("name"): c for c in suite}
    assert cases["passes"].find("failure") is None
    failure = cases["fails too"].find("failure")
    assert failure is not None and "count: expected 5, got 2" in (failure.get("message") or "")
    assert "FAIL" in proc.stdout  # the text summary still goes to the terminal


def test_github_output_is_one_annotation_per_failure_at_its_place(tmp_path: Path) -> None:
    path = write(tmp_path, FAILING)
    proc = _cli("--format", "github", str(path), cwd=tmp_path)

    [annotation] = [line for line in proc.stdout.splitlines() if line.startswith("::error ")]
    line = line_of(path, "count: 5")
    assert re.match(rf"::error file=.*small\.test\.yaml,line={line},col=\d+,title=funcpipe test%3A fails::", annotation)


def test_parallel_and_serial_runs_give_the_same_results(tmp_path: Path) -> None:
    for n in range(3):
        write(tmp_path, PASSING if n != 1 else FAILING, name=f"t{n}.test.yaml")
    serial = funcpipe.run_tests([tmp_path], jobs=1)
    parallel = funcpipe.run_tests([tmp_path], jobs=2)
    shape = [(c.file, c.name, c.status, [p.location for p in c.problems]) for c in serial.cases]
    assert shape == [(c.file, c.name, c.status, [p.location for p in c.problems]) for c in parallel.cases]
    assert serial.exit_code == parallel.exit_code == 1


def test_the_schema_command_writes_the_test_file_schema(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    result = CliRunner().invoke(main, ["schema", "--test-file", "-o", str(out)])
    assert result.exit_code == 0
    assert json.loads(out.read_text(encoding="utf-8"))["title"] == "funcpipe pipeline tests"


def test_the_commands_formats_are_the_renderers() -> None:
    from funcpipe.cli._test import FORMATS as OFFERED
    from funcpipe.pipetest.output import FORMATS

    assert OFFERED == FORMATS
