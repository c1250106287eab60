"""bench/pipetest.py runs as a script and prints every figure (timings are not checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "pipetest.py"

REPORT = re.compile(
    r"pipeline test, 3 documents, best of 1\n"
    r"  no faults \(baseline\): \d+\.\d ms real\n"
    r"  ten 429s with Retry-After 30s: \d+\.\d ms real, 300 s virtual\n"
    r"  real time / baseline: \d+\.\d\dx; virtual / real: [\d,]+x \(target < 2 s: (ok|above target)\)\n"
    r"  bench took \d+\.\d s\n"
)


def test_the_bench_prints_every_figure() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--repeat", "1", "--docs", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert REPORT.fullmatch(proc.stdout), proc.stdout
