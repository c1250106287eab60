"""bench/costs.py runs as a script and prints every figure (timings are not checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "costs.py"

US = r"\d+\.\d\d us"
REPORT = re.compile(
    r"per call, best of 1 x 200 calls, events kept\n"
    rf"  no meter: {US}\n"
    rf"  meter \(usage, price, usage event\): {US} \(\d+\.\d\dx\)\n"
    rf"  meter and two budgets: {US} \(\d+\.\d\dx\)\n"
    r"main job \(README \+ docs/, chunks of 800/100\), estimate vs Llama 2 BPE tokenizer\n"
    r"  input tokens: estimated [\d,]+, counted [\d,]+: \d\.\d{3}x \(target within 20%\)\n"
    r"  requests: estimated \d+, made \d+\n"
)


def test_bench_prints_the_overheads_and_the_estimate_beside_the_tokenizer() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--calls", "200", "--repeat", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert REPORT.fullmatch(out.stdout), out.stdout
