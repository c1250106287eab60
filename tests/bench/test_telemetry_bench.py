"""bench/telemetry.py runs as a script and prints every figure (timings are not checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "telemetry.py"

US = r"\d+\.\d\d us"
RATE = r"[\d,]+ items/s"
REPORT = re.compile(
    r"apply_policy per call, every call-level policy set, best of 1\n"
    rf"  events kept in a list: {US}\n"
    rf"  \+ Prometheus metrics: {US}( \([+-]{US}\))?\n"
    rf"  \+ OpenTelemetry tracer: {US}( \([+-]{US}\))?\n"
    rf"  \+ JSON log lines: {US}( \([+-]{US}\))?\n"
    r"a whole run, 200 items through a map stage under a policy, per CPU second\n"
    rf"  without metrics or traces: {RATE}\n"
    rf"  with metrics and traces: {RATE}\n"
    r"  ratio: \d+\.\d\dx, -?\d+\.\d us more CPU per item\n"
)


def test_bench_prints_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--calls", "200", "--n", "200", "--repeat", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert REPORT.fullmatch(out.stdout), out.stdout
