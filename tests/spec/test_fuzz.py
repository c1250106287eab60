"""Whatever it is fed, ``funcpipe validate`` ends with 0 or 2 and located errors.

Valid specs are mutated at the text level (deleted, duplicated and corrupted
lines, injected tags and YAML indicators) and at the data level (deleted,
retyped and renamed keys), then validated through the real command.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcpipe.cli import main
from tests.spec._support import VALID

BASES = [p.read_text(encoding="utf-8") for p in VALID]
NOISE = ["\t", "{", "}", "[", "]", ":", "- ", "&a ", "*a", "!", "%", "'", '"', "|", "#", "\x00", "é", "---"]
TAGS = ["!!python/object/apply:os.system ", "!!binary ", "!custom ", "!!set ", "!!float ", "!!int "]
VALUES: list[Any] = [
    0,
    -1,
    2**70,
    1.5,
    "x",
    "",
    [],
    {},
    None,
    True,
    "1s",
    "${FUNCPIPE_FUZZ_UNSET}",
    "{{ params.nope }}",
    "{{ ''.__class__ }}",
    "{% for %}",
    [1, "a", None],
    {"kind": "hashing"},
    float("nan"),
    float("inf"),
    10**100,
    "nan",
    "1e999s",
    "../x",
    "a" * 300,
    "{{ 2**999**999 }}",
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((*prefix, i))
            out.extend(_paths(value, (*prefix, i)))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


@st.composite
def _data_mutation(draw: st.DrawFn, text: str) -> str:
    doc = yaml.safe_load(text)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        op = draw(st.sampled_from(["delete", "retype", "rename"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "retype":
            parent[path[-1]] = draw(st.sampled_from(VALUES))
        elif isinstance(parent, dict):
            new = draw(st.sampled_from([f"{path[-1]}x", str(path[-1])[:-1] or "k", "on", "1"]))
            parent[new] = parent.pop(path[-1])
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@st.composite
def _text_mutation(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "corrupt", "tag", "truncate"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "corrupt":
            col = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:col] + draw(st.sampled_from(NOISE)) + lines[i][col:]
        elif op == "tag" and ": " in lines[i]:
            key, _, value = lines[i].partition(": ")
            lines[i] = f"{key}: {draw(st.sampled_from(TAGS))}{value}"
        elif op == "truncate":
            lines = lines[:i]
    return "\n".join(lines) + "\n"


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(BASES))
    if draw(st.booleans()):
        return draw(_data_mutation(text))
    return draw(_text_mutation(text))


@pytest.mark.slow  # 150 documents through the whole validator
@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_mutated())
def test_validate_ends_with_0_or_2_and_located_errors_within_a_second(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "fuzz.yaml"
        spec.write_text(text, encoding="utf-8")
        started = time.perf_counter()
        result = CliRunner().invoke(main, ["validate", "--format", "json", str(spec)])
        elapsed = time.perf_counter() - started
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    payload = json.loads(result.output)
    (checked,) = payload["files"]
    assert checked["valid"] is (result.exit_code == 0)
    if result.exit_code == 2:
        assert checked["errors"]
    for error in checked["errors"]:
        assert error["line"] >= 1 and error["col"] >= 1 and error["message"], error
        assert error["file"] in (str(spec), "<--set>")
    assert elapsed < 1.0
