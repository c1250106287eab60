"""``funcpipe validate`` (and `funcpipe.check`) on pipeline test files: the file, then the spec it names."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import funcpipe
from funcpipe.cli import main
from tests.pipetest._support import SPEC, write

TESTS = """\
  - name: stores the docs
    expect:
      stages: {chunk: {count: 2}}
"""


def validate(*files: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", *map(str, files)])
    return result.exit_code, result.output


def test_a_valid_test_file_is_checked_as_one(tmp_path: Path) -> None:
    path = write(tmp_path, TESTS)
    code, out = validate(path)
    assert code == 0, out
    assert f"{path}: ok (test file of small.yaml, 1 test)" in out


def test_an_invalid_test_file_gets_located_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "  - name: x\n    expect: {stages: {chunk: {cuont: 2}}}\n")
    code, out = validate(path)
    assert code == 2, out
    # Located in the test file, as a test file's error (a spec would have no `expect`).
    assert f"{path}:4:31: tests[0].expect.stages.chunk.cuont: unknown field 'cuont' (did you mean 'count'?)" in out


def test_the_spec_a_test_file_names_is_validated_too(tmp_path: Path) -> None:
    path = write(tmp_path, TESTS, spec=SPEC.replace("use: text.chunk", "use: text.chnk"))
    code, out = validate(path)
    assert code == 2, out
    assert "small.yaml:" in out and "did you mean 'text.chunk'" in out
    check = funcpipe.check(path)
    assert not check.valid and check.name == "small.yaml" and check.stages == 1
