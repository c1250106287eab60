"""The resume ledger's speed: records/s as it grows, against the previous layout in the same run.

Each round settles ``--records`` source items the way the runner does (one
``is_done`` lookup as the item is admitted, one ``record`` as it settles),
with 64-hex source ids and content hashes, then reopens the ledger and looks
every item up again (a re-run that has nothing to do). The baseline is the
previous layout, replayed with its own statements: text keys
``(pipeline, source_id)`` of 64-hex strings, committed every 256 records.
Rates are printed for each quarter of the records, so a ledger that slows as
it grows shows it.

Run it as ``python bench/ledger.py --records 200000``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from funcpipe.run.ledger import Ledger  # noqa: E402

KEY = hashlib.sha256(b"resume key").hexdigest()


class PreviousLayout:
    """The first ledger layout, as it was: its schema, its statements, its group of 256."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS settled (pipeline TEXT NOT NULL, source_id TEXT NOT NULL, "
            "content TEXT NOT NULL, outcome TEXT NOT NULL, run_id TEXT NOT NULL, at REAL NOT NULL, "
            "PRIMARY KEY (pipeline, source_id)) WITHOUT ROWID"
        )
        self._pending: list[tuple[str, str, str, str, str, float]] = []

    def is_done(self, source_id: str, content: str, key: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM settled WHERE pipeline = ? AND source_id = ? AND content = ? AND outcome = 'done'",
            (key, source_id, content),
        ).fetchone()
        return row is not None

    def record(self, source_id: str, content: str, outcome: str, key: str) -> None:
        self._pending.append((key, source_id, content, outcome, "run", time.time()))
        if len(self._pending) >= 256:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO settled VALUES (?, ?, ?, ?, ?, ?)", self._pending)
            self._db.execute("COMMIT")
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._db.close()


def items(n: int) -> list[tuple[str, str]]:
    """``n`` (source id, content hash) pairs, as the runner sees them."""
    return [
        (hashlib.sha256(f"s{i}".encode()).hexdigest(), hashlib.sha256(f"c{i}".encode()).hexdigest()) for i in range(n)
    ]


def settle(ledger: object, pairs: list[tuple[str, str]]) -> list[float]:
    """Admit and settle every pair; the rate (records/s) of each quarter."""
    is_done: Callable[[str, str, str], bool] = ledger.is_done  # type: ignore[attr-defined]
    record: Callable[[str, str, str, str], None] = ledger.record  # type: ignore[attr-defined]
    quarter = max(1, len(pairs) // 4)
    rates = []
    for start in range(0, len(pairs), quarter):
        part = pairs[start : start + quarter]
        t0 = time.perf_counter()
        for sid, content in part:
            if not is_done(sid, content, KEY):
                record(sid, content, "done", KEY)
        rates.append(len(part) / (time.perf_counter() - t0))
    return rates


def skip_all(ledger: object, pairs: list[tuple[str, str]]) -> float:
    """Look every pair up again (a re-run with nothing to do); records/s."""
    is_done: Callable[[str, str, str], bool] = ledger.is_done  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    skipped = sum(is_done(sid, content, KEY) for sid, content in pairs)
    if skipped != len(pairs):
        raise SystemExit(f"only {skipped} of {len(pairs)} items were found done")
    return len(pairs) / (time.perf_counter() - t0)


def measure(make: Callable[[Path], object], root: Path, pairs: list[tuple[str, str]]) -> tuple[list[float], float]:
    """Quarter rates of a first run, and the rate of the re-run, for one layout."""
    path = root / "ledger.sqlite"
    ledger = make(path)
    rates = settle(ledger, pairs)
    ledger.close()  # type: ignore[attr-defined]
    again = make(path)
    rerun = skip_all(again, pairs)
    again.close()  # type: ignore[attr-defined]
    return rates, rerun


def main(argv: list[str] | None = None) -> int:
    """Run both layouts and print their rates and ratios."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=200_000, help="source items settled per layout")
    args = p.parse_args(argv)
    if args.records < 4:
        p.error("--records must be >= 4")
    pairs = items(args.records)
    results = {}
    for name, make in (
        ("previous layout", PreviousLayout),
        ("ledger", lambda path: Ledger(path, KEY, "bench")),
    ):
        root = Path(tempfile.mkdtemp(prefix="funcpipe-ledger-"))
        try:
            results[name] = measure(make, root, pairs)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    for name, (rates, rerun) in results.items():
        quarters = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"{name}: first run {quarters} records/s by quarter; re-run {rerun:,.0f} lookups/s")
    old, new = results["previous layout"], results["ledger"]
    first = (sum(1 / r for r in old[0]) / sum(1 / r for r in new[0])) if new[0] else 0.0
    print(f"records: {args.records:,}; first run {first:.2f}x the previous layout, re-run {new[1] / old[1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
