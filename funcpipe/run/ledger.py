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

Records are committed in groups (every `FLUSH_EVERY` settlements or
`FLUSH_SECONDS`, and by the runner's periodic flush): a crash loses at most
the last group, whose items are then simply redone. In WAL mode a commit
survives the process being killed; it costs no fsync.

The layout keeps rows small, since a table of random keys costs a page
write per row a commit touches: a resume key is a small integer
(``resume_keys``), a source id is keyed by a 64-bit hash of it, and hex
digests (source ids, content hashes) are stored as bytes. A key with no
rows when the ledger opens (a first run, or a changed spec) answers
`Ledger.is_done` without a query. Rows of the previous layout are carried
over once, on the first open.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

FLUSH_EVERY = 2048
FLUSH_SECONDS = 0.25

_OUTCOMES = {"done": 1, "failed": 2, "filtered": 3, "unfinished": 4}
_DIGEST = re.compile(r"[0-9a-f]{64}")

_SCHEMA = (
    # owner: the source stage (<pipeline>/<stage>) whose current key this is, once a run drained under it.
    "CREATE TABLE IF NOT EXISTS resume_keys (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, owner TEXT)",
    "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE)",
    # source: a 64-bit hash of source_id, so the primary key is two integers.
    "CREATE TABLE IF NOT EXISTS settled ("
    # source_id and content have no declared type: bytes and text are kept as given.
    "key INTEGER NOT NULL, source INTEGER NOT NULL, source_id NOT NULL, content NOT NULL, "
    "outcome INTEGER NOT NULL, run INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (key, source)"
    ") WITHOUT ROWID",
)
_RECORD = (
    "INSERT OR REPLACE INTO settled (key, source, source_id, content, outcome, run, at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_LOOKUP = "SELECT source_id, content, outcome FROM settled WHERE key = ? AND source = ?"


def _pack(text: str) -> bytes | str:
    """A sha256 hex digest as its 32 bytes, half the size; any other text as it is (the two never meet)."""
    if len(text) == 64 and _DIGEST.fullmatch(text):
        return bytes.fromhex(text)
    return text


def _unpack(value: bytes | str) -> str:
    return value.hex() if isinstance(value, bytes) else value


def _source_key(packed: bytes | str) -> int:
    """A 64-bit key for a packed source id: a digest's first bytes, else a hash of the text."""
    raw = packed if isinstance(packed, bytes) else hashlib.blake2b(packed.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(raw[:8], "big", signed=True)


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
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=64)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA cache_size=-16000")  # 16 MB: the hot pages of a large ledger
        # Fewer, larger checkpoints: each one writes the pages of many groups back at once.
        self._db.execute("PRAGMA wal_autocheckpoint=8192")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            _upgrade(self._db)
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute("INSERT OR IGNORE INTO runs (run_id) VALUES (?)", (run_id,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            self._db.close()
            raise
        self._run = int(self._db.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])
        self._keys: dict[str, int] = {}
        # Keys with no rows when this ledger first saw them: `is_done` answers for
        # earlier runs, so nothing can be done under them, whatever this run records.
        self._empty: set[int] = set()
        self._pending: list[tuple[int, int, bytes | str, bytes | str, int, int, float]] = []
        self._last_flush = time.monotonic()

    def _key(self, key: str | None) -> int:
        name = key or self.pipeline
        found = self._keys.get(name)
        if found is not None:
            return found
        row = self._db.execute("SELECT id FROM resume_keys WHERE key = ?", (name,)).fetchone()
        if row is None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR IGNORE INTO resume_keys (key) VALUES (?)", (name,))
            row = self._db.execute("SELECT id FROM resume_keys WHERE key = ?", (name,)).fetchone()
        ident = int(row[0])
        if self._db.execute("SELECT 1 FROM settled WHERE key = ? LIMIT 1", (ident,)).fetchone() is None:
            self._empty.add(ident)
        self._keys[name] = ident
        return ident

    def is_done(self, source_id: str, content: str, key: str | None = None) -> bool:
        """True if this source item, with this content, ended ``done`` under ``key`` in an earlier run.

        Records this ledger made are not seen under a key that had no rows
        when it was first used (a first run): a source item read twice in one
        run is processed twice, which idempotent writes make harmless.
        """
        ident = self._key(key)
        if ident in self._empty:
            return False
        sid = _pack(source_id)
        # By the primary key alone, compared here: a plain key lookup is the cheapest statement.
        row = self._db.execute(_LOOKUP, (ident, _source_key(sid))).fetchone()
        return row is not None and row[2] == 1 and row[0] == sid and row[1] == _pack(content)

    def record(self, source_id: str, content: str, outcome: str, key: str | None = None) -> None:
        """Note that a source item settled under ``key``; committed with the next group."""
        sid = _pack(source_id)
        self._pending.append(
            (self._key(key), _source_key(sid), sid, _pack(content), _OUTCOMES[outcome], self._run, time.time())
        )
        if len(self._pending) >= FLUSH_EVERY or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Commit every pending record in one transaction."""
        if self._pending:
            # In key order, the inserts of one group share the pages they touch.
            self._pending.sort(key=lambda row: (row[0], row[1]))
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(_RECORD, self._pending)
            self._pending.clear()
        self._last_flush = time.monotonic()

    def forget(self, key: str, listed: Callable[[str], bool]) -> int:
        """Drop the records under ``key`` of the source items ``listed`` rejects (they are gone); returns how many.

        Committed before any store row is deleted, so that a source which
        comes back after a crash in between is redone, never wrongly skipped.
        """
        self.flush()
        ident = self._key(key)
        gone = [
            (ident, source)
            for source, sid in self._db.execute("SELECT source, source_id FROM settled WHERE key = ?", (ident,))
            if not listed(_unpack(sid))
        ]
        if gone:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM settled WHERE key = ? AND source = ?", gone)
        return len(gone)

    def prune_superseded(self, owner: str, key: str) -> int:
        """Make ``key`` the current resume key of ``owner`` and drop the records of its earlier keys.

        ``owner`` names a source stage of a pipeline (``<pipeline>/<stage>``).
        The runner calls it after a run that drained its stream: the records
        under a superseded key (an earlier version of the spec) could only
        make a run that goes back to that exact version skip work, and they
        would otherwise pile up with every edit. Returns how many records went.
        """
        self.flush()
        ident = self._key(key)
        stale = [
            (i, k)
            for i, k in self._db.execute("SELECT id, key FROM resume_keys WHERE owner = ? AND id != ?", (owner, ident))
        ]
        removed = 0
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE resume_keys SET owner = ? WHERE id = ?", (owner, ident))
            for stale_id, name in stale:
                removed += self._db.execute("DELETE FROM settled WHERE key = ?", (stale_id,)).rowcount
                self._db.execute("DELETE FROM resume_keys WHERE id = ?", (stale_id,))
                self._keys.pop(name, None)
        return removed

    def count(self, outcome: str | None = None) -> int:
        """Settled items of this pipeline (of one outcome, if given)."""
        ident = self._key(None)
        if outcome is None:
            q = self._db.execute("SELECT count(*) FROM settled WHERE key = ?", (ident,))
        else:
            q = self._db.execute(
                "SELECT count(*) FROM settled WHERE key = ? AND outcome = ?", (ident, _OUTCOMES[outcome])
            )
        return int(q.fetchone()[0])

    def close(self) -> None:
        """Flush, fold the write-ahead log into the database, and close."""
        self.flush()
        # The next run then reads pages from the database file, not through a long log. Another
        # connection reading makes it fail: the log is folded later, by it or by the next run.
        with contextlib.suppress(sqlite3.OperationalError):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()


def _upgrade(db: sqlite3.Connection) -> None:
    """Carry the rows of the first layout (text keys) over to this one, once, inside the caller's transaction."""
    columns = [r[1] for r in db.execute("PRAGMA table_info(settled)")]
    if "pipeline" not in columns:
        return
    db.execute("ALTER TABLE settled RENAME TO settled_v1")
    for statement in _SCHEMA:
        db.execute(statement)
    keys: dict[str, int] = {}
    runs: dict[str, int] = {}
    rows = []
    for key, sid, content, outcome, run_id, at in db.execute(
        "SELECT pipeline, source_id, content, outcome, run_id, at FROM settled_v1"
    ):
        if key not in keys:
            db.execute("INSERT OR IGNORE INTO resume_keys (key) VALUES (?)", (key,))
            keys[key] = int(db.execute("SELECT id FROM resume_keys WHERE key = ?", (key,)).fetchone()[0])
        if run_id not in runs:
            db.execute("INSERT OR IGNORE INTO runs (run_id) VALUES (?)", (run_id,))
            runs[run_id] = int(db.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])
        if outcome in _OUTCOMES:
            packed = _pack(sid)
            rows.append((keys[key], _source_key(packed), packed, _pack(content), _OUTCOMES[outcome], runs[run_id], at))
    db.executemany(_RECORD, rows)
    db.execute("DROP TABLE settled_v1")
