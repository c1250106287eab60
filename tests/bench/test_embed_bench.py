"""The embedder bench runs as a script, tiny, and prints its report (only its format is checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "embed.py"
RATE = r"[\d,]+ embeddings/s \(\d+\.\d\d MB/s\)"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120)


def test_bench_prints_cold_and_warm_rates_for_the_docs() -> None:
    out = _run("--n", "20", "--repeat", "1")
    assert out.returncode == 0, out.stderr
    pattern = (
        rf"hashing embedder: 20 README/docs texts .*\n"
        rf"cold \(empty word cache\): {RATE}\n"
        rf"warm \(cached words\): {RATE}\n"
    )
    assert re.fullmatch(pattern, out.stdout), out.stdout


def test_bench_runs_on_synthetic_text() -> None:
    out = _run("--n", "5", "--repeat", "1", "--synthetic")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("hashing embedder: 5 synthetic texts")


def test_bench_refuses_a_non_positive_n() -> None:
    out = _run("--n", "0")
    assert out.returncode == 2
    assert "--n and --repeat must be >= 1" in out.stderr
