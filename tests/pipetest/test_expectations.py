"""Each kind of expectation holds when it should, and fails with a located, readable message when not."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipetest._support import line_of, only, run, write


def test_right_expectations_of_every_kind_pass(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - name: everything holds
          inputs: {load: {path: docs}}
          expect:
            stages:
              load:
                count: 2
                contains: [{meta: {path: a.md}}]
                where:
                  meta.path: {one_of: [a.md, b.md]}
                  data: {contains: "#", min_length: 10}
              chunk: {where: {meta.name: {exists: true}, meta.nope: {exists: false}}}
              store: {count: 2}
            dead_letters: []
            report: {status: ok, exit_code: 0, accounting: {sources: 2, done: 2}, stages: {load: {outputs: 2}}}
            policy:
              embed: {attempts: 1, retries: 0, waits: [], breaker: []}
            query:
              - question: what floats on water?
                hits: {count: 2, sources: [b.md, a.md], where: {score: {gt: 0}}}
                answer: {contains: [Boats], matches: "float"}
        """,
    )
    results = run(path)
    assert only(results).status == "passed", results.render()
    assert results.exit_code == 0


@pytest.mark.parametrize(
    ("expect", "anchor", "message"),
    [
        ("stages: {load: {count: 3}}", "count: 3", "stage load: count: expected 3, got 2"),
        (
            "stages: {load: {contains: [{meta: {path: c.md}}]}}",
            "c.md",
            'stage load: no item matches {"meta": {"path": "c.md"}} (of 2)',
        ),
        (
            "stages: {load: {where: {data: {max_length: 20}}}}",
            "data: {max_length",
            "stage load: 2 of 2 items fail data: item 0: data max_length 20 does not hold for length",
        ),
        (
            "stages: {load: {where: {meta.nope: {exists: true}}}}",
            "meta.nope",
            "item 0: meta.nope is missing",
        ),
        ("dead_letters: [{stage: embed, code: TRANSIENT}]", "dead_letters", "dead letters: expected 1, got 0"),
        ("report: {status: failed}", "status: failed", 'report.status: expected "failed", got "ok"'),
        ("report: {accounting: {nope: 1}}", "nope", "report.accounting.nope: the report has no 'nope'"),
        ("policy: {embed: {attempts: 2}}", "attempts: 2", "stage embed's policy: attempts: expected 2, got 1"),
        ("policy: {embed: {breaker: [open]}}", "breaker", 'breaker transitions: expected ["open"], got []'),
        (
            "query: [{question: boats?, answer: {contains: [Zebras]}}]",
            "Zebras",
            "query 'boats?': the answer lacks 'Zebras'",
        ),
        ("query: [{question: boats?, error: nothing}]", "error: nothing", "was expected to fail with 'nothing'"),
    ],
)
def test_a_wrong_expectation_fails_at_its_place_with_what_differs(
    tmp_path: Path, expect: str, anchor: str, message: str
) -> None:
    path = write(tmp_path, f"- name: wrong\n  inputs: {{load: {{path: docs}}}}\n  expect: {{{expect}}}\n")
    results = run(path)
    case = only(results)

    assert case.status == "failed" and results.exit_code == 1
    [problem] = case.problems
    assert message in problem.message
    assert (problem.file, problem.line) == (str(path), line_of(path, anchor))


def test_exact_items_fail_with_a_diff_of_only_what_differs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - name: items
          inputs: {load: {files: {a.md: "one", b.md: "two"}}}
          expect:
            stages:
              load:
                items: [two, three]
        """,
    )
    [problem] = only(run(path)).problems

    assert problem.line == line_of(path, "items: [two, three]")
    assert problem.diff is not None
    assert "-- three" in problem.diff and "+- one" in problem.diff
    assert "two" not in "".join(
        line for line in problem.diff.splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")
    )


def test_items_compare_in_any_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "- name: any order\n"
        "  inputs: {load: {files: {a.md: one, b.md: two}}}\n"
        "  expect: {stages: {load: {items: [two, one]}}}\n",
    )
    assert only(run(path)).status == "passed"


def test_inline_json_lines_feed_a_jsonl_source(tmp_path: Path) -> None:
    spec = """\
version: 1
name: lines
stages:
  - {id: load, use: source.jsonl, with: {path: records.jsonl, id_field: id, text_field: text}}
  - {id: out, use: sink.jsonl, with: {path: out/records.jsonl}}
"""
    path = write(
        tmp_path,
        """\
        - name: two records
          inputs:
            load:
              lines:
                - {id: r1, text: first, lang: en}
                - {id: r2, text: second, lang: fr}
          expect:
            stages:
              out:
                count: 2
                contains: [{data: second, meta: {lang: fr}}]
        """,
        spec=spec,
    )
    case = only(run(path))
    assert case.status == "passed", case.problems
    assert not (tmp_path / "out").exists(), "a test wrote into the project"


def test_an_override_that_leaves_a_source_nothing_to_read_is_an_error_at_the_override(tmp_path: Path) -> None:
    path = write(tmp_path, "- name: gone\n  inputs: {load: {path: docs}}\n  set:\n    stages[0].with.glob: '*.txt'\n")
    results = run(path)
    [problem] = only(results).problems
    assert results.exit_code == 2
    assert "matches glob '*.txt'" in problem.message
    assert problem.line == line_of(path, "inputs:")


def test_a_dead_letter_message_is_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - name: auth
          adapters: {embedder: {kind: scripted, dim: 64, script: [401]}}
          inputs: {load: {files: {a.md: "one text"}}}
          expect:
            dead_letters: [{stage: embed, code: AUTH, message: "answered 401"}]
            report: {status: failed}
        """,
    )
    case = only(run(path))
    assert case.status == "passed", case.problems


def test_a_run_that_never_finishes_fails_at_its_virtual_timeout(tmp_path: Path) -> None:
    (tmp_path / "hang.py").write_text(
        "import asyncio\n\nasync def forever(item):\n    await asyncio.Event().wait()\n", encoding="utf-8"
    )
    spec = "version: 1\nname: hang\nstages:\n"
    spec += "  - {id: load, use: source.files, with: {path: docs, glob: '*.md'}}\n"
    spec += "  - {id: wait, use: map, with: {fn: 'hang:forever'}}\n"
    path = write(tmp_path, "- name: hangs\n  timeout: 10m\n  inputs: {load: {path: docs}}\n", spec=spec)

    case = only(run(path))

    assert case.status == "failed"
    [problem] = case.problems
    assert problem.message == "the run did not finish within 10m of virtual time"
    assert problem.line == line_of(path, "timeout: 10m")
    assert case.virtual >= 600.0 and case.duration < 60.0


CLASH = """\
version: 1
name: clash
adapters:
  small: {kind: hashing, dim: 32}
  big: {kind: hashing, dim: 64}
  store: {kind: memory}
stages:
  - {id: load, use: source.files, with: {path: docs, glob: "*.md"}}
  - {id: e1, use: embed, adapter: small, from: load}
  - {id: s1, use: vector.upsert, adapter: store, from: e1}
  - {id: e2, use: embed, adapter: big, from: load}
  - {id: s2, use: vector.upsert, adapter: store, from: e2}
"""


def test_a_run_that_fails_as_a_whole_fails_the_test_unless_the_test_expects_it(tmp_path: Path) -> None:
    unexpected = write(tmp_path, "- name: clash\n  inputs: {load: {path: docs}}\n", spec=CLASH)
    [problem] = only(run(unexpected)).problems
    assert problem.message.startswith("the run failed: stage s2: cannot prepare adapter 'store'")
    assert problem.hint == "expect it with expect: {report: {status: error}}"

    expected = write(
        tmp_path, "- name: clash\n  inputs: {load: {path: docs}}\n  expect: {report: {status: error}}\n", spec=CLASH
    )
    assert only(run(expected)).status == "passed"
