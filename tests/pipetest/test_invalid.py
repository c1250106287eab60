"""The broken test-file corpus: each file states the exact located errors it must produce.

Each file in ``invalid/`` starts with comment lines:

    # expect: LINE:COL fragment        an error at LINE:COL of the test file whose message holds fragment
    # expect: FILE:LINE:COL fragment   the same, in FILE (beside the test file: its spec)

Their names do not end in ``.test.yaml``, so `funcpipe test` run on the
repository does not find them; named explicitly, a file is run whatever its name.

`funcpipe test` must report exactly those errors, no more and no fewer,
and give exit code 2 without running anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from funcpipe.pipetest import run_tests
from funcpipe.pipetest.results import Problem

INVALID = Path(__file__).parent / "invalid"
_EXPECT = re.compile(r"^# expect: (?:(?P<file>[\w.-]+\.yaml):)?(?P<line>\d+):(?P<col>\d+) (?P<frag>.+)$")
CORPUS = sorted(INVALID.glob("[0-9]*.yaml"))  # not *.test.yaml: `funcpipe test` on the repo must not find them


@dataclass(frozen=True)
class Expected:
    file: Path
    line: int
    col: int
    fragment: str


def _expected(path: Path) -> list[Expected]:
    out: list[Expected] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _EXPECT.match(line)
        if m is None:
            break
        file = INVALID / m["file"] if m["file"] else path
        out.append(Expected(file, int(m["line"]), int(m["col"]), m["frag"].strip()))
    return out


def _matches(p: Problem, want: Expected) -> bool:
    return (Path(p.file), p.line, p.col) == (want.file, want.line, want.col) and want.fragment in p.message + (
        f" {p.path}" if p.path else ""
    )


def test_the_corpus_has_thirty_broken_test_files_each_stating_its_errors() -> None:
    assert len(CORPUS) >= 30
    assert all(_expected(p) for p in CORPUS)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_each_broken_test_file_gives_exactly_its_located_errors_and_exit_2(path: Path) -> None:
    results = run_tests([path], jobs=1)
    problems = [p for c in results.cases for p in c.problems]
    wanted = _expected(path)

    assert results.exit_code == 2
    assert [c.status for c in results.cases] == ["error"] * len(results.cases)
    unmatched = [w for w in wanted if not any(_matches(p, w) for p in problems)]
    extra = [p for p in problems if not any(_matches(p, w) for w in wanted)]
    shown = "\n".join(f"{p.location}: {p.path}: {p.message}" for p in problems)
    assert (unmatched, extra) == ([], []), shown
