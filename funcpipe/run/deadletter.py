"""The dead-letter file: one JSON line per failed item, with its reason."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from funcpipe.core import ErrInfo, Item
from funcpipe.errors import RunError
from funcpipe.run.report import os_reason

_SKIP_META = {"item", "stage"}


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, ErrInfo):
        return {"code": value.code, "msg": value.msg}
    if isinstance(value, bytes | bytearray):
        return {"$bytes": len(value)}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def dead_letter_record(error: ErrInfo, *, stage: str, run_id: str) -> dict[str, object]:
    """The JSON form of a failed item (DESIGN.md): the item's fields plus stage, error, attempts."""
    item = error.meta.get("item")
    base: dict[str, object] = (
        item.to_json() if isinstance(item, Item) else {"id": None, "source_id": None, "data": None, "meta": {}}
    )
    meta = {k: v for k, v in error.meta.items() if k not in _SKIP_META}
    attempts = meta.get("attempts", 1)
    return {
        **_jsonable(base),  # type: ignore[dict-item]
        "stage": stage,
        "error": {"code": error.code, "msg": error.msg, "meta": _jsonable(meta)},
        "attempts": attempts,
        "run_id": run_id,
    }


class DeadLetters:
    """Appends dead-letter records to a JSONL file, opened on the first failure.

    Args:
        path: the JSONL file.
        run_id: the run's id, written in every record.
        redact: applied to each record before it is written (the run's
            `funcpipe.run.redact.Redactor.scrub`), so no known secret reaches the file.
    """

    def __init__(self, path: Path, run_id: str, redact: Callable[[object], object] | None = None) -> None:
        self.path = path
        self.run_id = run_id
        self.redact = redact
        self.count = 0
        self._fh: IO[str] | None = None

    def check(self) -> None:
        """Make sure the file can be written, before the run starts (it is opened on the first failure).

        It is really opened for appending, not judged by its permission bits;
        a missing directory is created, and a file created only to try is
        removed again.

        Raises:
            RunError: naming the file and the reason.
        """
        existed = self.path.exists() or self.path.is_symlink()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise RunError(
                f"cannot write the dead-letter file {self.path}: {os_reason(exc, self.path.parent)}; "
                "make it writable, or set on_error.dead_letter to a writable path"
            ) from None
        if not existed:
            self.path.unlink(missing_ok=True)

    def write(self, error: ErrInfo, stage: str) -> None:
        """Append one record and flush it."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        rec: object = dead_letter_record(error, stage=stage, run_id=self.run_id)
        if self.redact is not None:
            rec = self.redact(rec)
        self._fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
        self._fh.flush()
        self.count += 1

    def write_record(self, record: Mapping[str, object]) -> None:
        """Append a record another process already made (a scale-out worker's), through the same redaction."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        rec: object = {**record, "run_id": self.run_id}
        if self.redact is not None:
            rec = self.redact(rec)
        self._fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        """Fsync and close the file if it was opened."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
