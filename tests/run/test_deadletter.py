"""The dead-letter file (funcpipe/run/deadletter.py): its record format, redaction, durability and failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from funcpipe.core import ErrCode, ErrInfo, Item
from funcpipe.run.deadletter import DeadLetters, dead_letter_record
from funcpipe.run.redact import REDACTED, Redactor

ITEM = Item("id-1", {"text": "héllo\nworld"}, {"path": "a.md"}, "src-1")


def _lines(path: Path) -> list[dict[str, object]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_record_is_the_item_plus_stage_error_attempts_and_run_id() -> None:
    error = ErrInfo(ErrCode.TIMEOUT, "attempt timed out after 10s", {"attempts": 3, "status": 504}).with_meta(
        item=ITEM, stage="embed"
    )
    assert dead_letter_record(error, stage="embed", run_id="run-1") == {
        "id": "id-1",
        "source_id": "src-1",
        "data": {"text": "héllo\nworld"},
        "meta": {"path": "a.md"},
        "stage": "embed",
        # The item and stage are the record itself, not repeated in the error's meta.
        "error": {"code": "TIMEOUT", "msg": "attempt timed out after 10s", "meta": {"attempts": 3, "status": 504}},
        "attempts": 3,
        "run_id": "run-1",
    }


def test_attempts_default_to_one_and_a_failure_without_item_has_null_ids() -> None:
    record = dead_letter_record(ErrInfo(ErrCode.BAD_INPUT, "undecodable"), stage="load", run_id="r")
    assert (record["id"], record["source_id"], record["data"], record["meta"]) == (None, None, None, {})
    assert record["attempts"] == 1


def test_error_meta_values_become_json() -> None:
    cause = ErrInfo(ErrCode.NETWORK, "connection reset")
    meta = {"cause": cause, "raw": b"\x00\x01\x02", "pair": (1, 2), "path": Path("x/y"), "nested": {1: [None, 2.5]}}
    record = dead_letter_record(ErrInfo(ErrCode.SERVICE_SPECIFIC, "bad", meta), stage="s", run_id="r")
    assert record["error"] == {
        "code": "SERVICE_SPECIFIC",
        "msg": "bad",
        "meta": {
            "cause": {"code": "NETWORK", "msg": "connection reset"},
            "raw": {"$bytes": 3},  # sizes, never raw bytes
            "pair": [1, 2],
            "path": "x/y",
            "nested": {"1": [None, 2.5]},
        },
    }
    json.dumps(record)


def test_records_are_appended_one_json_line_each(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deep" / "dead.jsonl"  # missing directories are made
    dead = DeadLetters(path, "run-1")
    dead.write(ErrInfo(ErrCode.USER_CODE, "ValueError: line one\nline two", {"item": ITEM}), "map")
    dead.write(ErrInfo(ErrCode.AUTH, "401 ✗"), "embed")
    dead.close()
    rows = _lines(path)
    assert [(r["stage"], r["error"]["code"]) for r in rows] == [("map", "USER_CODE"), ("embed", "AUTH")]  # type: ignore[index]
    assert rows[0]["data"] == {"text": "héllo\nworld"}
    assert "401 ✗" in path.read_text(encoding="utf-8")  # written as UTF-8, not escaped
    assert dead.count == 2


def test_each_record_is_on_disk_before_write_returns(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    dead = DeadLetters(path, "run-1")
    dead.write(ErrInfo(ErrCode.AUTH, "denied", {"item": ITEM}), "embed")
    assert [r["id"] for r in _lines(path)] == ["id-1"]  # read by another handle, file still open
    dead.close()


def test_a_later_run_appends_after_the_earlier_one(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    for run_id in ("run-1", "run-2"):
        dead = DeadLetters(path, run_id)
        dead.write(ErrInfo(ErrCode.AUTH, "denied", {"item": ITEM}), "embed")
        dead.close()
    assert [r["run_id"] for r in _lines(path)] == ["run-1", "run-2"]


def test_the_file_is_created_only_on_the_first_failure(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dead.jsonl"
    dead = DeadLetters(path, "run-1")
    dead.close()
    assert not path.parent.exists()
    assert dead.count == 0


def test_close_is_idempotent_and_a_write_after_it_reopens_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    dead = DeadLetters(path, "run-1")
    dead.write(ErrInfo(ErrCode.AUTH, "one"), "embed")
    dead.close()
    dead.close()
    dead.write(ErrInfo(ErrCode.AUTH, "two"), "embed")
    dead.close()
    assert [r["error"]["msg"] for r in _lines(path)] == ["one", "two"]  # type: ignore[index]


def test_known_secrets_are_redacted_everywhere_in_the_record(tmp_path: Path) -> None:
    secret = "sk-live-0123456789"
    item = Item("id-1", {"text": f"key {secret}"}, {"header": f"Bearer {secret}"}, "src-1")
    error = ErrInfo(ErrCode.AUTH, f"rejected {secret}", {"item": item, "body": {"echo": [secret]}})
    path = tmp_path / "dead.jsonl"
    dead = DeadLetters(path, "run-1", redact=Redactor([secret]).scrub)
    dead.write(error, "embed")
    dead.close()
    text = path.read_text(encoding="utf-8")
    assert secret not in text
    (row,) = _lines(path)
    assert row["error"] == {"code": "AUTH", "msg": f"rejected {REDACTED}", "meta": {"body": {"echo": [REDACTED]}}}
    assert row["data"] == {"text": f"key {REDACTED}"}
    assert row["meta"] == {"header": f"Bearer {REDACTED}"}


@pytest.mark.parametrize("kind", ["parent is a file", "path is a directory"])
def test_an_unwritable_path_raises_os_error_and_counts_nothing(tmp_path: Path, kind: str) -> None:
    if kind == "parent is a file":
        (tmp_path / "state").write_text("not a directory", encoding="utf-8")
        path = tmp_path / "state" / "dead.jsonl"
    else:
        path = tmp_path / "dead.jsonl"
        path.mkdir()
    dead = DeadLetters(path, "run-1")
    with pytest.raises(OSError):
        dead.write(ErrInfo(ErrCode.AUTH, "denied"), "embed")
    assert dead.count == 0
    dead.close()
