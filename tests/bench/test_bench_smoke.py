"""The overhead bench runs as a script and prints its report (timings are not checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "core_overhead.py"

REPORT = re.compile(
    r"items: 300, stages: 4\n"
    r"funcpipe async_gen_map: [\d,]+ items/s\n"
    r"hand-written async gen: [\d,]+ items/s\n"
    r"ratio: \d+\.\d\dx \(target >= 0\.5x: (ok|below target)\)\n"
    r"funcpipe unfused, one generator per map: [\d,]+ items/s \(\d+\.\d\dx\)\n"
)


def test_bench_prints_rates_and_ratio() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--n", "300", "--repeat", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert REPORT.fullmatch(out.stdout), out.stdout


def test_bench_refuses_a_non_positive_n() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--n", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--n and --repeat must be >= 1" in out.stderr
