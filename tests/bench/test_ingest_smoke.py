"""The ingestion bench runs as a script, tiny, and prints its report (only its format is checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ingest.py"

TINY = ("--docs", "6", "--batch", "2", "--concurrency", "2", "--latency-ms", "1", "--rate", "20")
NUM = r"\d+\.\d\d"
REPORT = re.compile(
    r"docs: 6, chunks: 6, batch: 2, concurrency: 2, policy: 20/s burst 1\n"
    r"server: 1 ms latency, 20/s burst 2, fail rate 0\n"
    rf"setup \(initdb of the embedded PostgreSQL, not timed\): {NUM} s\n"
    rf"ideal: {NUM} s = \d+ requests / min\(20/s, 2 / 1 ms = 2000/s\) \(rate-bound\)\n"
    rf"first run: {NUM} s wall, {NUM}x ideal \(target <= 1\.1x: (ok|missed)\); process {NUM} s, {NUM}x ideal\n"
    rf"  to the first request: {NUM} s from the process start, -?{NUM} s from the run's; embedding {NUM} s; "
    rf"from the last answer: -?{NUM} s to the run's end, {NUM} s to the process exit\n"
    r"requests: \d+ \(\d+ calls, \d+ retries\), 429s: \d+ \(target 0: (ok|missed)\)\n"
    rf"second run \(unchanged corpus\): {NUM} s wall, process {NUM} s, 0 requests \(target 0: ok\)\n"
)


def test_bench_prints_both_runs_against_the_ideal() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), *TINY],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert REPORT.fullmatch(out.stdout), out.stdout


def test_bench_refuses_a_fail_rate_of_one() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--fail-rate", "1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--fail-rate must be in [0, 1)" in out.stderr
