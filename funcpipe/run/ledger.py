"""The resume ledger: which source items are settled, per resume key.

The key (``pipeline`` column, see `funcpipe.compile.resume_key`) is what
defines a source stage's outputs; a policy edit keeps it, so nothing is
redone. Ledgers written before the key existed hold the document's
fingerprint there instead: their rows match no key, so the first run after
the upgrade redoes everything once (idempotent upserts), and the format is
unchanged.

A source item is recorded only once it is settled, that is, once everything
derived from it is committed downstream (``done``) or dead-lettered
(``failed``). A restarted run skips the ``done`` items whose content hash is
unchanged and redoes the rest; since every write downstream is an idempotent
upsert, what a crash left half-written is completed, not duplicated. Failed
items are redone on the next run, so fixing the cause and running again is
enough.

Records are committed in small groups (every `FLUSH_EVERY` settlements or
`FLUSH_SECONDS`, and by the runner's periodic flush): a crash loses at most
the last group, whose items are then simply redone. In WAL mode a commit
survives the process being killed; it costs no fsync.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

FLUSH_EVERY = 256
FLUSH_SECONDS = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settled (
    pipeline TEXT NOT NULL,
    source_id TEXT NOT NULL,
    content TEXT NOT NULL,
    outcome TEXT NOT NULL,
    run_id TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (pipeline, source_id)
) WITHOUT ROWID
"""


class Ledger:
    """Settled source items of one pipeline, in ``state_dir/ledger.sqlite``.

    Args:
        path: the sqlite file.
        pipeline: the default resume key, for calls that give none.
        run_id: this run's id (recorded with each item).
    """

    def __init__(self, path: Path, pipeline: str, run_id: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.pipeline = pipeline
        self.run_id = run_id
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._pending: list[tuple[str, str, str, str, str, float]] = []
        self._last_flush = time.monotonic()

    def is_done(self, source_id: str, content: str, key: str | None = None) -> bool:
        """True if this source item, with this content, ended ``done`` under ``key`` in an earlier run."""
        row = self._db.execute(
            "SELECT 1 FROM settled WHERE pipeline = ? AND source_id = ? AND content = ? AND outcome = 'done'",
            (key or self.pipeline, source_id, content),
        ).fetchone()
        return row is not None

    def record(self, source_id: str, content: str, outcome: str, key: str | None = None) -> None:
        """Note that a source item settled under ``key``; committed with the next group."""
        self._pending.append((key or self.pipeline, source_id, content, outcome, self.run_id, time.time()))
        if len(self._pending) >= FLUSH_EVERY or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Commit every pending record in one transaction."""
        if self._pending:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO settled (pipeline, source_id, content, outcome, run_id, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    self._pending,
                )
            self._pending.clear()
        self._last_flush = time.monotonic()

    def forget(self, key: str, listed: Callable[[str], bool]) -> int:
        """Drop the records under ``key`` of the source items ``listed`` rejects (they are gone); returns how many.

        Committed before any store row is deleted, so that a source which
        comes back after a crash in between is redone, never wrongly skipped.
        """
        self.flush()
        gone = [
            (key, sid)
            for (sid,) in self._db.execute("SELECT source_id FROM settled WHERE pipeline = ?", (key,)).fetchall()
            if not listed(sid)
        ]
        if gone:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM settled WHERE pipeline = ? AND source_id = ?", gone)
        return len(gone)

    def count(self, outcome: str | None = None) -> int:
        """Settled items of this pipeline (of one outcome, if given)."""
        if outcome is None:
            q = self._db.execute("SELECT count(*) FROM settled WHERE pipeline = ?", (self.pipeline,))
        else:
            q = self._db.execute(
                "SELECT count(*) FROM settled WHERE pipeline = ? AND outcome = ?", (self.pipeline, outcome)
            )
        return int(q.fetchone()[0])

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        self._db.close()
