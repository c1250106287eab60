"""The broken-spec corpus: each file states the exact errors it must produce.

Each file in ``invalid/`` starts with comment lines:

    # set: KEY=VALUE                  (optional) a --set override to apply
    # expect: LINE:COL fragment       an error at LINE:COL whose message holds fragment
    # expect: FILE:LINE:COL fragment  the same, located in another file (<--set>)

Loading must produce exactly the expected errors, no more and no fewer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from funcpipe.errors import SpecError, SpecErrors
from funcpipe.spec import format_errors, load_spec
from tests.spec._support import INVALID

_EXPECT = re.compile(r"^# expect: (?:(?P<file><[^>]+>):)?(?P<line>\d+):(?P<col>\d+) (?P<frag>.+)$")


@dataclass(frozen=True)
class Expected:
    file: str | None
    line: int
    col: int
    fragment: str


def _header(path: Path) -> tuple[list[Expected], list[str]]:
    expects: list[Expected] = []
    sets: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# set: "):
            sets.append(line.removeprefix("# set: "))
        elif m := _EXPECT.match(line):
            expects.append(Expected(m["file"], int(m["line"]), int(m["col"]), m["frag"].strip()))
        else:
            break
    return expects, sets


def _errors(path: Path) -> list[SpecError]:
    _, sets = _header(path)
    with pytest.raises(SpecErrors) as info:
        load_spec(path, overrides=sets, env={})
    return info.value.errors


def _matches(error: SpecError, want: Expected, path: Path) -> bool:
    file_ok = error.file == (want.file or str(path))
    return file_ok and (error.line, error.col) == (want.line, want.col) and (want.fragment in error.message)


def test_the_corpus_has_at_least_forty_broken_specs() -> None:
    assert len(INVALID) >= 40


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_every_broken_spec_states_its_expectations(path: Path) -> None:
    expects, _ = _header(path)
    assert expects, f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_broken_spec_reports_exactly_the_expected_errors(path: Path) -> None:
    expects, _ = _header(path)
    errors = _errors(path)
    rendered = format_errors(errors)
    assert len(errors) == len(expects), rendered
    for want in expects:
        assert any(_matches(e, want, path) for e in errors), f"missing {want}\n{rendered}"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_every_error_has_a_hint(path: Path) -> None:
    assert all(e.hint for e in _errors(path))


def test_a_secret_pasted_into_an_env_field_is_never_shown() -> None:
    path = next(p for p in INVALID if "env_field_secret" in p.name)
    for fmt in ("text", "json", "github"):
        assert "CANARY" not in format_errors(_errors(path), fmt)  # type: ignore[arg-type]


def test_a_python_tag_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = tmp_path / "evil.yaml"
    spec.write_text(
        "version: 1\nname: evil\nparams:\n"
        f'  x: !!python/object/apply:os.system ["touch {marker}"]\n'
        "stages:\n  - {id: load, use: source.files, with: {path: docs}}\n",
        encoding="utf-8",
    )
    with pytest.raises(SpecErrors):
        load_spec(spec, env={})
    assert not marker.exists()
