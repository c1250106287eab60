"""bench/policies.py runs as a script and prints every figure (timings are not checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "policies.py"

RATE = r"[\d,]+ items/s"
VERDICT = r"(ok|below target)"
STAGES = (
    r"async stages at concurrency 16, {label}\n"
    rf"  the event loop's ceiling, 16 tasks and no stream: {RATE}\n"
    rf"  funcpipe apply_stream_policy: {RATE}\n"
    rf"  funcpipe apply_stream_policy through a PolicyRuntime: {RATE}\n"
    rf"  semaphore \+ asyncio\.gather: {RATE}\n"
    rf"  aiostream pipe\.map(\(task_limit=16\): {RATE}|: not installed)\n"
    rf"  funcpipe / baseline: \d+\.\d\dx \(targets >= 100,000 items/s and >= 5x: {VERDICT}\)\n"
)
LIMITED = r"[\d,]+\.\d/s \(\d+\.\d% of configured\)"
OVERHEAD = r"\d+\.\d\d us \(\+-?\d+\.\d\d us\)"
REPORT = re.compile(
    r"items: 300 \(300 through aiostream and the PolicyRuntime\), stages: 4, concurrency: 16, best of 1\n"
    r"pure map stages\n"
    rf"  funcpipe async_gen_map: {RATE}\n"
    rf"  hand-written async generators: {RATE}\n"
    rf"  ratio: \d+\.\d\dx \(target >= 0\.5x: {VERDICT}\)\n"
    + STAGES.format(label="a call that completes at once")
    + STAGES.format(label=r"a call that awaits asyncio\.sleep\(0\)")
    + r"rate limiter at 200/s for 0\.3 s on the real clock, 16 callers\n"
    rf"  funcpipe PolicyRuntime: {LIMITED}\n"
    rf"  aiolimiter AsyncLimiter: ({LIMITED}|not installed)\n"
    r"apply_policy overhead per call\n"
    r"  bare call: \d+\.\d\d us\n"
    rf"  concurrency only: {OVERHEAD}\n"
    rf"  every call-level policy set: {OVERHEAD}\n"
    rf"  every call-level policy set, events kept: {OVERHEAD}\n"
)


def test_the_bench_prints_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--n", "300", "--repeat", "1", "--limiter-seconds", "0.3", "--calls", "300"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )

    assert REPORT.fullmatch(out.stdout), out.stdout


def test_the_bench_refuses_a_non_positive_size() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--limiter-seconds", "0"], capture_output=True, text=True, timeout=60
    )

    assert out.returncode == 2
    assert "must be positive" in out.stderr
