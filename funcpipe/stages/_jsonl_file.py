"""`JsonlFile`: an append-only JSON Lines file that never writes an id twice, with its ids on disk.

The ids already written live in a small SQLite index, not in memory, so a
sink's memory stays flat however many items it has written. The index
records how much of the file it covers (size, modification time, inode and
line count). When the file is exactly what the index covers, opening reads
nothing; when it has grown past it (a crash between the append and the
index update, or lines appended by hand), only the new lines are read; when
it is anything else (rewritten, truncated, replaced), the index is rebuilt
from the whole file. The file is the truth, the index a cache of it.

Reading the file checks it: only a torn final line (no newline: a crash
mid-write) is cut off. Any other line that is not JSON is an error naming
the file and the line, and the file is left untouched.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from funcpipe.core import Item

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ids (id TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS covered (one INTEGER PRIMARY KEY CHECK (one = 0), "
    "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, lines INTEGER NOT NULL)",
)
_LOOKUP = 500  # ids per lookup statement, under SQLite's parameter limit


class JsonlFileError(ValueError):
    """The file holds a line that is neither JSON nor a torn final line."""


def item_json(item: Item) -> str:
    """One JSON line for ``item`` (DESIGN.md's JSON form)."""
    return json.dumps(item.to_json(), ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True)
class _Covered:
    size: int
    mtime_ns: int
    inode: int
    lines: int


def default_index_path(path: Path) -> Path:
    """The index beside the file: ``.<name>.ids.sqlite`` in its directory."""
    return path.parent / f".{path.name}.ids.sqlite"


class JsonlFile:
    """An append-only JSONL file that never writes an id twice.

    Args:
        path: the JSON Lines file.
        index: the SQLite file holding the ids written (default: beside it,
            `default_index_path`).

    Each write is flushed and fsynced before the items count as committed,
    and its ids are indexed after that, so a crash in between only leaves
    lines the next open indexes.
    """

    def __init__(self, path: Path, index: Path | None = None) -> None:
        self.path = path
        self.index_path = index if index is not None else default_index_path(path)
        self._db: sqlite3.Connection | None = None
        self._covered = _Covered(0, 0, 0, 0)

    def open(self) -> None:
        """Check the file and bring its id index up to date; a torn final line is cut off.

        Raises:
            JsonlFileError: a line that is not JSON, naming the file and the line.
            OSError: the file or its index cannot be read or written.
        """
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.index_path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                db.execute(statement)
            self._catch_up(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def close(self) -> None:
        """Close the index (the file is closed after every write)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _catch_up(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT size, mtime_ns, inode, lines FROM covered").fetchone()
        known = _Covered(*row) if row is not None else None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._reset(db, _Covered(0, 0, 0, 0))
            return
        now = _Covered(st.st_size, st.st_mtime_ns, st.st_ino, known.lines if known else 0)
        if known is not None and known == now:
            self._covered = known
            return
        if known is None or known.inode != now.inode or now.size <= known.size or not self._line_ends_at(known.size):
            # Not the file the index describes (or changed in place): read it all again.
            self._reset(db, _Covered(0, 0, now.inode, 0))
            known = self._covered
        self._read_from(db, known)

    def _line_ends_at(self, offset: int) -> bool:
        """Whether a line of the file ends just before ``offset`` (or it is 0): appended lines start there."""
        if offset == 0:
            return True
        with self.path.open("rb") as fh:
            fh.seek(offset - 1)
            return fh.read(1) == b"\n"

    def _reset(self, db: sqlite3.Connection, covered: _Covered) -> None:
        db.execute("BEGIN")
        db.execute("DELETE FROM ids")
        db.execute("DELETE FROM covered")
        db.execute("COMMIT")
        self._covered = covered

    def _read_from(self, db: sqlite3.Connection, start: _Covered) -> None:
        """Index the lines after ``start``; cut a torn final line; refuse any other bad line."""
        good, line_no = start.size, start.lines
        batch: list[tuple[str]] = []
        torn = False
        with self.path.open("rb") as fh:
            fh.seek(start.size)
            for line in fh:
                if not line.endswith(b"\n"):
                    torn = True
                    break
                line_no += 1
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise JsonlFileError(
                        f"{self.path}:{line_no}: not a JSON line ({exc}); only a torn last line is cut off on "
                        "resume. Fix or remove that line, or write to another file"
                    ) from None
                if isinstance(obj, dict) and "id" in obj:
                    batch.append((str(obj["id"]),))
                good += len(line)
                if len(batch) >= 10_000:
                    self._insert(db, batch)
                    batch = []
        if torn:
            with self.path.open("r+b") as fh:
                fh.truncate(good)
        self._insert(db, batch)
        self._commit_covered(db, line_no)

    @staticmethod
    def _insert(db: sqlite3.Connection, ids: Sequence[tuple[str]]) -> None:
        if ids:
            db.execute("BEGIN")
            db.executemany("INSERT OR IGNORE INTO ids (id) VALUES (?)", ids)
            db.execute("COMMIT")

    def _commit_covered(self, db: sqlite3.Connection, lines: int, ids: Sequence[tuple[str]] = ()) -> None:
        st = self.path.stat() if self.path.exists() else None
        covered = _Covered(st.st_size, st.st_mtime_ns, st.st_ino, lines) if st else _Covered(0, 0, 0, 0)
        db.execute("BEGIN")
        if ids:
            db.executemany("INSERT OR IGNORE INTO ids (id) VALUES (?)", ids)
        db.execute(
            "INSERT OR REPLACE INTO covered (one, size, mtime_ns, inode, lines) VALUES (0, ?, ?, ?, ?)",
            (covered.size, covered.mtime_ns, covered.inode, covered.lines),
        )
        db.execute("COMMIT")
        self._covered = covered

    def _present(self, db: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _LOOKUP):
            part = ids[start : start + _LOOKUP]
            marks = ",".join("?" * len(part))
            found.update(r[0] for r in db.execute(f"SELECT id FROM ids WHERE id IN ({marks})", part))
        return found

    def write(self, items: Iterable[Item]) -> int:
        """Append the items not yet in the file; returns how many were written.

        Raises:
            JsonlFileError: see `open`.
            OSError: the file cannot be written.
        """
        self.open()
        db = self._db
        assert db is not None
        batch = list(items)
        present = self._present(db, list(dict.fromkeys(it.id for it in batch)))
        lines: list[str] = []
        new: list[tuple[str]] = []
        for it in batch:
            if it.id in present:
                continue
            present.add(it.id)
            new.append((it.id,))
            lines.append(item_json(it) + "\n")
        if lines:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
            self._commit_covered(db, self._covered.lines + len(lines), new)
        return len(lines)


__all__ = ["JsonlFile", "JsonlFileError", "default_index_path", "item_json"]
