"""The ledger bench runs as a script, tiny, and prints its report (only its format is checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ledger.py"

RATES = r"[\d,]+, [\d,]+, [\d,]+, [\d,]+"
REPORT = re.compile(
    rf"previous layout: first run {RATES} records/s by quarter; re-run [\d,]+ lookups/s\n"
    rf"ledger: first run {RATES} records/s by quarter; re-run [\d,]+ lookups/s\n"
    r"records: 400; first run \d+\.\d\dx the previous layout, re-run \d+\.\d\dx\n"
)


def test_bench_prints_both_layouts_and_their_ratio() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--records", "400"], capture_output=True, text=True, check=True, timeout=60
    )
    assert REPORT.fullmatch(out.stdout), out.stdout


def test_bench_refuses_too_few_records() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--records", "2"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
