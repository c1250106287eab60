"""The sink memory bench runs as a script, tiny, and prints its report (only its format is checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sink_memory.py"

MB = r"\d+\.\d MB"
REPORT = re.compile(
    rf"sink\.stdout: peak RSS {MB} at 10 items, {MB} at 20; growth \d+\.\d\dx\n"
    rf"sink\.jsonl: peak RSS {MB} at 10 items, {MB} at 20; growth \d+\.\d\dx\n"
    r"sink\.jsonl at 20 items: \d+\.\d\dx the stdout baseline\n"
)


def test_bench_prints_both_sinks_at_both_sizes() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--small", "10", "--large", "20"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert REPORT.fullmatch(out.stdout), out.stdout


def test_bench_refuses_sizes_out_of_order() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--small", "20", "--large", "10"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
