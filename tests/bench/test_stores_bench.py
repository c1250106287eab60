"""The store bench runs as a script, tiny, and prints a line per store (only its format is checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "stores.py"
RATE = r"[\d,]+ rows/s \(\d+\.\d\dx\)"
LINE = r"{}: load " + RATE + r", unchanged reload " + RATE + r", query [\d,]+/s \(\d+\.\d\dx\)\n"


def test_bench_prints_every_store_against_pgvector() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "30", "--dim", "8", "--batch", "16", "--queries", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    head = r"stores: 30 rows of dim 8 in batches of 16, then again, then 3 top-5 queries\n"
    lines = "".join(LINE.format(kind) for kind in ("pgvector", "memory", "qdrant", "chroma", "lancedb"))
    assert re.fullmatch(head + lines, out.stdout), out.stdout
    assert "pgvector: load" in out.stdout and "(1.00x)" in out.stdout


def test_bench_refuses_too_few_rows_for_its_filtered_queries() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--rows", "10"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--rows must be >= 15" in out.stderr
