"""Stores mirror their sources: real ``funcpipe run`` subprocesses on a real PostgreSQL + pgvector.

After each change to the sources (delete, edit, add, rename of files; removal
or edit of JSON Lines records) a run leaves exactly the rows a run from
scratch over the same sources writes into a fresh table. A listing that is
incomplete (a read error, fail_fast, a signal) deletes nothing; ``append``
never deletes; pipelines sharing a table never delete each other's rows.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pg import unique_name
from tests.store._support import CORPUS, REPO, clean_rows, environ, files_spec, remove, rows, run, source_paths, write


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root, CORPUS)
    return root


def make(project: Path, **kw: str) -> tuple[Path, str, str]:
    table = unique_name("sync")
    text = files_spec(table, **kw)
    spec = project / "spec.yaml"
    spec.write_text(text, encoding="utf-8")
    return spec, table, text


def ok_run(spec: Path, *args: str) -> dict[str, object]:
    proc, report = run(spec, *args)
    assert proc.returncode == 0, proc.stderr
    assert report["accounting"]["invariant_holds"]
    return report


def test_delete_edit_add_and_rename_each_leave_the_rows_of_a_clean_run(project: Path) -> None:
    spec, table, text = make(project)
    ok_run(spec)
    assert source_paths(table) == {"alpha.md", "beta.md", "gamma.md", "sub/delta.md"}
    alpha_chunks = sum(1 for r in rows(table) if r["meta"]["path"] == "alpha.md")

    remove(project / "docs" / "alpha.md")
    report = ok_run(spec)
    assert report["accounting"]["deleted"] == 1
    assert report["accounting"]["deleted_chunks"] == alpha_chunks
    assert report["sync"] == [
        {"stage": "store", "source": "load", "mode": "mirror", "status": "done", "deleted_sources": 1,
         "deleted_chunks": alpha_chunks}
    ]  # fmt: skip
    assert rows(table) == clean_rows(project, text, table)

    write(project, {"docs/beta.md": "# Beta\n\nBeta was rewritten entirely; nothing of the old text is left."})
    report = ok_run(spec)
    assert (report["accounting"]["done"], report["accounting"]["skipped"], report["accounting"]["deleted"]) == (1, 2, 0)
    assert rows(table) == clean_rows(project, text, table)

    write(project, {"docs/epsilon.md": "# Epsilon\n\nEpsilon is small. Epsilon is positive."})
    ok_run(spec)
    assert rows(table) == clean_rows(project, text, table)

    (project / "docs" / "gamma.md").rename(project / "docs" / "sub" / "gamma2.md")
    report = ok_run(spec)
    assert report["accounting"]["deleted"] == 1
    assert source_paths(table) == {"beta.md", "epsilon.md", "sub/gamma2.md", "sub/delta.md"}
    assert rows(table) == clean_rows(project, text, table)


def test_a_source_deleted_then_restored_is_stored_again(project: Path) -> None:
    spec, table, text = make(project)
    ok_run(spec)
    alpha = (project / "docs" / "alpha.md").read_text()
    remove(project / "docs" / "alpha.md")
    ok_run(spec)
    write(project, {"docs/alpha.md": alpha})
    report = ok_run(spec)
    assert report["accounting"]["done"] == 1  # the ledger forgot it when its rows went
    assert rows(table) == clean_rows(project, text, table)


def test_fresh_deletes_vanished_sources_too(project: Path) -> None:
    spec, table, text = make(project)
    ok_run(spec)
    remove(project / "docs" / "sub" / "delta.md")
    report = ok_run(spec, "--fresh")
    assert (report["accounting"]["done"], report["accounting"]["deleted"]) == (3, 1)
    assert rows(table) == clean_rows(project, text, table)


def test_append_keeps_the_rows_of_vanished_sources(project: Path) -> None:
    spec, table, _ = make(project, store_with=", with: {sync: append}")
    ok_run(spec)
    before = rows(table)
    remove(project / "docs" / "alpha.md")
    report = ok_run(spec)
    assert report["accounting"]["deleted"] == 0
    assert report["sync"][0]["status"].startswith("append")
    assert rows(table) == before


def test_a_file_that_cannot_be_read_makes_the_listing_incomplete_and_nothing_is_deleted(project: Path) -> None:
    spec, table, text = make(project)
    ok_run(spec)
    before = rows(table)
    remove(project / "docs" / "alpha.md")
    write(project, {"docs/beta.md": "too big " * 600})  # over max_bytes: BAD_INPUT at the source
    proc, report = run(spec)
    assert proc.returncode == 1
    assert report["accounting"]["deleted"] == 0
    assert report["sync"][0]["status"].startswith("skipped")
    assert source_paths(table) == {"alpha.md", "beta.md", "gamma.md", "sub/delta.md"}
    assert [r for r in rows(table) if r["meta"]["path"] == "alpha.md"] == [
        r for r in before if r["meta"]["path"] == "alpha.md"
    ]

    write(project, {"docs/beta.md": "# Beta\n\nBeta is readable again."})
    ok_run(spec)
    assert rows(table) == clean_rows(project, text, table)


def test_fail_fast_deletes_nothing(project: Path) -> None:
    spec, table, _ = make(project, on_error="fail_fast")
    ok_run(spec)
    before = rows(table)
    remove(project / "docs" / "alpha.md")
    write(project, {"docs/zeta.md": "too big " * 600})
    proc, report = run(spec)
    assert proc.returncode == 1
    assert report["status"] == "failed"
    assert report["accounting"]["deleted"] == 0
    assert rows(table) == before


def test_a_missing_source_directory_deletes_nothing(project: Path) -> None:
    spec, table, _ = make(project)
    ok_run(spec)
    before = rows(table)
    (project / "docs").rename(project / "elsewhere")
    proc, _ = run(spec)
    # A located spec error before anything runs: nothing read, nothing deleted.
    assert proc.returncode == 2
    assert "stages[0].with.path" in proc.stderr and "does not exist" in proc.stderr
    assert rows(table) == before


def test_sigterm_deletes_nothing_and_the_next_run_does(project: Path) -> None:
    write(project, {f"docs/many/n{i:02}.md": f"# Note {i}\n\nNote number {i} says hello." for i in range(30)})
    calls = project / "calls.log"
    slow = (
        f'  - {{id: log, use: map, with: {{fn: "tests.run.user_fns:log_call", kwargs: {{path: "{calls}"}}}}}}\n'
        '  - {id: slow, use: map, with: {fn: "tests.run.user_fns:slow", kwargs: {seconds: 0.3}},'
        " policy: {concurrency: 1}}\n"
    )
    spec, table, text = make(project, extra=slow)
    ok_run(spec)
    remove(project / "docs" / "alpha.md")
    for i in range(30):  # changed, so the next run has slow work to interrupt
        write(project, {f"docs/many/n{i:02}.md": f"# Note {i}\n\nNote number {i} says goodbye."})
    calls.unlink()
    report_path = project / "interrupted.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "funcpipe", "run", str(spec), "--quiet", "--report", str(report_path)],
        env=environ(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (calls.exists() and calls.read_text().count("\n") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    report = json.loads(report_path.read_text())
    assert report["status"] == "interrupted"
    assert report["accounting"]["deleted"] == 0 and report["sync"] == []
    assert "alpha.md" in source_paths(table)

    report = ok_run(spec)
    assert report["accounting"]["deleted"] == 1
    assert rows(table) == clean_rows(project, text, table)


def test_two_pipelines_sharing_a_table_never_delete_each_others_rows(tmp_path: Path) -> None:
    table = unique_name("shared")
    one, two = tmp_path / "one", tmp_path / "two"
    write(one, {"docs/a1.md": "# A1\n\nFirst pipeline, first file.", "docs/a2.md": "# A2\n\nFirst pipeline, second."})
    write(two, {"docs/b1.md": "# B1\n\nSecond pipeline, first file.", "docs/b2.md": "# B2\n\nSecond pipeline, second."})
    (one / "spec.yaml").write_text(files_spec(table, name="one"))
    (two / "spec.yaml").write_text(files_spec(table, name="two"))
    ok_run(one / "spec.yaml")
    ok_run(two / "spec.yaml")
    assert source_paths(table) == {"a1.md", "a2.md", "b1.md", "b2.md"}
    remove(one / "docs" / "a1.md")
    report = ok_run(one / "spec.yaml")
    assert report["accounting"]["deleted"] == 1
    assert source_paths(table) == {"a2.md", "b1.md", "b2.md"}
    remove(two / "docs" / "b2.md")
    ok_run(two / "spec.yaml")
    assert source_paths(table) == {"a2.md", "b1.md"}


def test_two_sources_into_one_store_each_sync_only_their_own_rows(tmp_path: Path) -> None:
    table = unique_name("two")
    root = tmp_path / "p"
    write(root, {"a/x1.md": "# X1\n\nFrom source a.", "a/x2.md": "# X2\n\nAlso a.", "b/y1.md": "# Y1\n\nFrom b."})
    (root / "spec.yaml").write_text(
        f"""\
version: 1
name: two
adapters:
  embedder: {{kind: hashing, dim: 32}}
  store: {{kind: pgvector, dsn: "${{DATABASE_URL}}", table: {table}}}
stages:
  - {{id: a, use: source.files, with: {{path: a}}}}
  - {{id: b, use: source.files, with: {{path: b}}}}
  - {{id: chunk, use: text.chunk, from: [a, b], with: {{size: 120, overlap: 20}}}}
  - {{id: embed, use: embed, adapter: embedder}}
  - {{id: store, use: vector.upsert, adapter: store}}
"""
    )
    ok_run(root / "spec.yaml")
    assert source_paths(table) == {"x1.md", "x2.md", "y1.md"}
    remove(root / "a" / "x1.md")
    report = ok_run(root / "spec.yaml")
    assert report["accounting"]["deleted"] == 1
    assert source_paths(table) == {"x2.md", "y1.md"}


# -- JSON Lines --------------------------------------------------------------------------

JSONL_SPEC = """\
version: 1
name: records
adapters:
  embedder: {{kind: hashing, dim: 32}}
  store: {{kind: pgvector, dsn: "${{DATABASE_URL}}", table: {table}, exact: true}}
stages:
  - {{id: load, use: source.jsonl, with: {{path: records.jsonl, id_field: id, text_field: text}}}}
  - {{id: chunk, use: text.chunk, with: {{size: 60, overlap: 10}}}}
  - {{id: embed, use: embed, adapter: embedder}}
  - {{id: store, use: vector.upsert, adapter: store}}
"""


def jsonl(root: Path, records: list[dict[str, object]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


RECORDS = [
    {"id": "r1", "text": "Record one talks about apples. Apples are red or green. Some are yellow."},
    {"id": "r2", "text": "Record two talks about pears."},
    {"id": "r3", "text": "Record three talks about plums. Plums are purple, and dried they are prunes."},
]


def test_removed_and_edited_records_leave_the_rows_of_a_clean_run(tmp_path: Path) -> None:
    root, table = tmp_path / "j", unique_name("jsonl")
    text = JSONL_SPEC.format(table=table)
    jsonl(root, RECORDS)
    (root / "spec.yaml").write_text(text)
    ok_run(root / "spec.yaml")
    jsonl(root, [RECORDS[0], {"id": "r3", "text": "Record three now talks about cherries only."}])
    report = ok_run(root / "spec.yaml")
    assert (report["accounting"]["done"], report["accounting"]["skipped"], report["accounting"]["deleted"]) == (1, 1, 1)
    assert {r["meta"]["id"] for r in rows(table)} == {"r1", "r3"}
    assert [r["text"] for r in rows(table) if r["meta"]["id"] == "r3"] == [
        "Record three now talks about cherries only."
    ]
    assert rows(table) == clean_rows(root, text, table, keep=("records.jsonl",))


def test_a_duplicate_id_keeps_the_first_record_and_dead_letters_the_later(tmp_path: Path) -> None:
    root, table = tmp_path / "d", unique_name("dup")
    jsonl(root, [RECORDS[0], RECORDS[1], {"id": "r1", "text": "An impostor with the same id."}])
    (root / "spec.yaml").write_text(JSONL_SPEC.format(table=table))
    proc, report = run(root / "spec.yaml")
    assert proc.returncode == 1
    a = report["accounting"]
    assert (a["sources"], a["done"], a["failed"], a["invariant_holds"]) == (3, 2, 1, True)
    stored = rows(table)
    assert {r["meta"]["id"] for r in stored} == {"r1", "r2"}
    assert not any("impostor" in r["text"] for r in stored)
    [dead] = [json.loads(x) for x in (root / ".funcpipe" / "records.dead.jsonl").read_text().splitlines()]
    assert dead["error"]["code"] == "BAD_INPUT"
    assert "'r1'" in dead["error"]["msg"] and "line 1" in dead["error"]["msg"]
    assert dead["error"]["meta"]["duplicate_of_line"] == 1
    assert dead["meta"]["line"] == 3
