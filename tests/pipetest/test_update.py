"""``--update`` writes a snapshot into its place and leaves the rest of the file as written."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcpipe.pipetest._update import apply_snapshots
from funcpipe.pipetest.results import Snapshot

TEMPLATE = """\
# a comment that stays
spec: s.yaml
tests:
  - name: a   # and this one
    expect:
      stages:
        chunk:
          count: 7
          items: [x, y]
        other:
          items:
            - block one
            - block two
          # a comment between keys
          where: {data: {exists: true}}
      report: {status: ok}
"""

PATHS = {
    "count": ("tests", 0, "expect", "stages", "chunk", "count"),
    "flow": ("tests", 0, "expect", "stages", "chunk", "items"),
    "block": ("tests", 0, "expect", "stages", "other", "items"),
    "status": ("tests", 0, "expect", "report", "status"),
}

scalars = st.one_of(
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.none(),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
    st.text(st.sampled_from("ab \n#:-'\"{}[],|>"), max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text("abcxyz_", min_size=1, max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


def _at(data: object, path: tuple[str | int, ...]) -> object:
    for part in path:
        data = data[part]  # type: ignore[index]
    return data


def _comments(text: str) -> list[str]:
    return [line.split("#", 1)[1] for line in text.splitlines() if "# " in line]


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(sorted(PATHS)), value=values)
def test_a_snapshot_reads_back_and_the_rest_of_the_file_is_unchanged(tmp_path: Path, which: str, value: object) -> None:
    path = tmp_path / "t.test.yaml"
    path.write_text(TEMPLATE, encoding="utf-8")
    where = PATHS[which]

    apply_snapshots(path, [Snapshot(where, value)])

    text = path.read_text(encoding="utf-8")
    after, before = yaml.safe_load(text), yaml.safe_load(TEMPLATE)
    assert _at(after, where) == value
    for other, p in PATHS.items():
        if other != which:
            assert _at(after, p) == _at(before, p)
    assert _comments(text)[: len(_comments(TEMPLATE))] == _comments(TEMPLATE) or isinstance(value, str)


def test_nothing_changes_when_the_value_is_already_written(tmp_path: Path) -> None:
    path = tmp_path / "t.test.yaml"
    path.write_text(TEMPLATE, encoding="utf-8")
    assert not apply_snapshots(path, [Snapshot(PATHS["count"], 7), Snapshot(PATHS["flow"], ["x", "y"])])
    assert path.read_text(encoding="utf-8") == TEMPLATE


def test_a_long_list_becomes_a_block_under_its_key_and_text_a_literal_block(tmp_path: Path) -> None:
    path = tmp_path / "t.test.yaml"
    path.write_text(TEMPLATE, encoding="utf-8")
    items = ["first line\nsecond line", *[f"item number {n}" for n in range(12)]]

    assert apply_snapshots(path, [Snapshot(PATHS["flow"], items)])

    text = path.read_text(encoding="utf-8")
    assert "          items:\n            - |-\n              first line\n              second line\n" in text
    assert yaml.safe_load(text)["tests"][0]["expect"]["stages"]["chunk"]["items"] == items
    assert not any(line != line.rstrip() for line in text.splitlines())
