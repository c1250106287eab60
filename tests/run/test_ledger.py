"""The resume ledger (funcpipe/run/ledger.py): what is recorded, when it is durable, what a reopen sees."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.run import ledger as ledger_module
from funcpipe.run.ledger import FLUSH_EVERY, Ledger

KEY = "key-1"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / ".funcpipe" / "ledger.sqlite"


@pytest.fixture
def no_timed_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    # Groups then end only by size or an explicit flush, however slow the machine is.
    monkeypatch.setattr(ledger_module, "FLUSH_SECONDS", 1e9)


def test_a_done_item_is_done_for_its_content_and_key_only(path: Path) -> None:
    first = Ledger(path, KEY, "run-1")
    first.record("s1", "c1", "done")
    first.record("s2", "c2", "failed")
    first.close()
    led = Ledger(path, KEY, "run-2")
    assert led.is_done("s1", "c1")
    assert not led.is_done("s1", "c1-edited")  # changed content is redone
    assert not led.is_done("s2", "c2")  # failed items are redone
    assert not led.is_done("s1", "c1", key="key-2")  # another resume key is another output
    assert not led.is_done("s3", "c3")
    led.close()


def test_records_under_an_explicit_key_are_apart_from_the_default(path: Path) -> None:
    first = Ledger(path, KEY, "run-1")
    first.record("s1", "c1", "done", key="key-2")
    first.close()
    led = Ledger(path, KEY, "run-2")
    assert led.is_done("s1", "c1", key="key-2")
    assert not led.is_done("s1", "c1")
    assert led.count() == 0
    led.close()


def test_the_last_record_of_an_item_wins(path: Path) -> None:
    led = Ledger(path, KEY, "run-1")
    led.record("s1", "c1", "done")
    led.flush()
    led.record("s1", "c1", "failed")
    led.flush()
    assert not led.is_done("s1", "c1")
    assert (led.count(), led.count("failed"), led.count("done")) == (1, 1, 0)
    led.close()


@pytest.mark.usefixtures("no_timed_flush")
def test_records_are_committed_in_groups_of_flush_every(path: Path) -> None:
    led = Ledger(path, KEY, "run-1")
    other = Ledger(path, KEY, "reader")  # another connection sees only what is committed
    for i in range(FLUSH_EVERY - 1):
        led.record(f"s{i}", "c", "done")
    assert other.count() == 0
    led.record(f"s{FLUSH_EVERY - 1}", "c", "done")
    assert other.count() == FLUSH_EVERY
    led.record("late", "c", "done")
    assert other.count() == FLUSH_EVERY
    led.flush()
    assert other.count() == FLUSH_EVERY + 1
    led.close()
    other.close()


def test_a_record_after_flush_seconds_commits_the_group(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "FLUSH_SECONDS", 0.0)
    led = Ledger(path, KEY, "run-1")
    other = Ledger(path, KEY, "reader")
    led.record("s1", "c", "done")
    assert other.is_done("s1", "c")
    led.close()
    other.close()


@pytest.mark.usefixtures("no_timed_flush")
def test_close_flushes_and_a_reopened_ledger_sees_everything(path: Path) -> None:
    led = Ledger(path, KEY, "run-1")
    led.record("s1", "c1", "done")
    led.record("s2", "c2", "failed")
    led.close()
    again = Ledger(path, KEY, "run-2")
    assert again.is_done("s1", "c1")
    assert (again.count("done"), again.count("failed")) == (1, 1)
    again.close()


@pytest.mark.usefixtures("no_timed_flush")
def test_forget_drops_the_unlisted_items_of_one_key_after_flushing(path: Path) -> None:
    led = Ledger(path, KEY, "run-1")
    for sid in ("a", "b", "c"):
        led.record(sid, "x", "done")
    led.record("a", "x", "done", key="key-2")
    # Pending records are committed first, so "c" (recorded, not yet flushed) is seen and dropped.
    assert led.forget(KEY, lambda sid: sid == "a") == 2
    assert led.forget(KEY, lambda sid: True) == 0
    led.close()
    reopened = Ledger(path, KEY, "run-2")
    assert reopened.count() == 1  # the forgetting was committed
    assert reopened.is_done("a", "x")
    assert not reopened.is_done("b", "x")
    assert not reopened.is_done("c", "x")
    assert reopened.is_done("a", "x", key="key-2")
    reopened.close()


def _crash(path: Path, script: str) -> None:
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from funcpipe.run import ledger as module
        module.FLUSH_SECONDS = 1e9
        led = module.Ledger(Path({str(path)!r}), {KEY!r}, "crashed")
        """
    ) + textwrap.dedent(script)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0, "the script was meant to die"
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("death", ["os._exit(1)", "os.kill(os.getpid(), signal.SIGKILL)"])
def test_a_crash_loses_at_most_the_group_in_progress(path: Path, death: str) -> None:
    _crash(
        path,
        f"""
        for i in range(module.FLUSH_EVERY + 10):
            led.record(f"s{{i}}", "c", "done")
        {death}
        """,
    )
    led = Ledger(path, KEY, "after")
    assert led.count() == FLUSH_EVERY
    assert led.is_done(f"s{FLUSH_EVERY - 1}", "c")
    assert not led.is_done(f"s{FLUSH_EVERY}", "c")  # lost with its group: redone, never wrongly skipped
    led.close()


@pytest.mark.slow
def test_an_explicit_flush_survives_a_kill(path: Path) -> None:
    _crash(path, 'led.record("s1", "c", "done")\nled.flush()\nos.kill(os.getpid(), signal.SIGKILL)\n')
    led = Ledger(path, KEY, "after")
    assert led.is_done("s1", "c")
    led.close()


_ops = st.lists(
    st.one_of(
        st.tuples(st.sampled_from("abc"), st.sampled_from(["c1", "c2"]), st.sampled_from(["done", "failed"])),
        st.just("flush"),
    ),
    max_size=20,
)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(_ops)
def test_after_close_an_item_is_done_exactly_when_its_last_record_is_done_with_that_content(ops: list[object]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.sqlite"
        led = Ledger(path, KEY, "run")
        last: dict[str, tuple[str, str]] = {}
        for op in ops:
            if op == "flush":
                led.flush()
            else:
                sid, content, outcome = op  # type: ignore[misc]
                led.record(sid, content, outcome)
                last[sid] = (content, outcome)
        led.close()
        again = Ledger(path, KEY, "next")
        for sid in "abc":
            for content in ("c1", "c2"):
                assert again.is_done(sid, content) == (last.get(sid) == (content, "done"))
        assert again.count() == len(last)
        again.close()


# -- layout: compact rows, the first layout carried over, superseded keys pruned -------------------


def test_hex_digests_and_other_texts_are_told_apart(path: Path) -> None:
    digest = "ab" * 32
    led = Ledger(path, KEY, "run-1")
    for sid in (digest, digest.upper(), "docs/a.md", "", "0"):
        led.record(sid, digest, "done")
    led.close()
    again = Ledger(path, KEY, "run-2")
    for sid in (digest, digest.upper(), "docs/a.md", "", "0"):
        assert again.is_done(sid, digest)
        assert not again.is_done(sid, digest.upper())  # content compared exactly, case included
    assert again.count() == 5
    again.close()


def test_a_ledger_of_the_first_layout_is_carried_over_once(path: Path) -> None:
    import sqlite3

    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE settled (pipeline TEXT NOT NULL, source_id TEXT NOT NULL, content TEXT NOT NULL, "
        "outcome TEXT NOT NULL, run_id TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (pipeline, source_id)) "
        "WITHOUT ROWID"
    )
    db.executemany(
        "INSERT INTO settled VALUES (?, ?, ?, ?, ?, 0)",
        [(KEY, "s1", "c1", "done", "old"), (KEY, "s2", "c2", "failed", "old"), ("key-2", "s1", "c1", "done", "old")],
    )
    db.commit()
    db.close()

    led = Ledger(path, KEY, "new")
    assert led.is_done("s1", "c1") and not led.is_done("s2", "c2")
    assert led.is_done("s1", "c1", key="key-2")
    assert (led.count("done"), led.count("failed")) == (1, 1)
    led.close()
    assert Ledger(path, KEY, "again").count() == 2


def test_a_new_resume_key_of_a_stage_drops_the_records_of_its_earlier_keys(path: Path) -> None:
    led = Ledger(path, KEY, "run-1")
    led.record("s1", "c1", "done", key="v1")
    led.record("s1", "c1", "done", key="other-stage")
    assert led.prune_superseded("p/load", "v1") == 0
    assert led.prune_superseded("p/other", "other-stage") == 0
    led.record("s1", "c1", "done", key="v2")

    assert led.prune_superseded("p/load", "v2") == 1
    led.close()
    again = Ledger(path, KEY, "run-2")
    assert not again.is_done("s1", "c1", key="v1")
    assert again.is_done("s1", "c1", key="v2")
    assert again.is_done("s1", "c1", key="other-stage")  # another stage's key is not superseded
    again.close()


def test_a_key_without_rows_when_first_used_answers_for_earlier_runs_only(path: Path) -> None:
    led = Ledger(path, KEY, "run-1")
    assert not led.is_done("s1", "c1")  # first use: the key has no rows
    led.record("s1", "c1", "done")
    led.flush()
    assert not led.is_done("s1", "c1")  # this run's own records are not looked up
    led.close()
    assert Ledger(path, KEY, "run-2").is_done("s1", "c1")
