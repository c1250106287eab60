"""The pgvector upsert bench runs as a script, tiny, and prints its report (only its format is checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "upsert.py"
LINE = r"index {}: COPY\+merge [\d,]+ rows/s, executemany [\d,]+ rows/s, ratio \d+\.\d\dx\n"


def test_bench_prints_both_methods_and_their_ratio_per_index() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "40", "--dim", "8", "--batch", "16"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    head = r"pgvector upsert: 40 new rows of dim 8, batches of 16, one transaction per batch\n"
    assert re.fullmatch(head + LINE.format("none") + LINE.format("hnsw"), out.stdout), out.stdout


def test_bench_refuses_a_non_positive_batch() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--batch", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "must be >= 1" in out.stderr
