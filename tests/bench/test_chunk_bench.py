"""The chunker bench runs as a script on a tiny corpus and prints its report (only its format is checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "chunk.py"

REPORT = re.compile(
    r"corpus: 2 files, \d+\.\d MB, \d+ chunks \(size 200, overlap 20\)\n"
    r"span_bounds: \d+\.\d MB/s; longest gap between two chunks \d+\.\d\d ms\n"
    r"fixed-size slices: \d+\.\d MB/s; span_bounds at \d+\.\d{3}x their speed\n"
    r"before: \d+\.\d MB/s, longest gap \d+\.\d\d ms; now \d+\.\d\dx as fast; same boundaries: yes\n"
)


def test_bench_prints_throughput_gap_and_the_comparison(tmp_path: Path) -> None:
    for name in ("a.md", "b.md"):
        (tmp_path / name).write_text("# Title\n\n" + "Some words here. " * 200 + "\n\n## Next\n\nMore text.\n")
    out = subprocess.run(
        [
            sys.executable, str(BENCH), "--dir", str(tmp_path), "--glob", "*.md", "--size", "200",
            "--overlap", "20", "--repeat", "1", "--before", str(REPO / "funcpipe" / "stages" / "text.py"),
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert REPORT.fullmatch(out.stdout), out.stdout
