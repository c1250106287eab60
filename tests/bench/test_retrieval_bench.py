"""The retrieval bench runs as a script on a tiny corpus and prints every figure (values are not checked)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "retrieval.py"


def test_bench_prints_recall_mrr_and_the_weak_match_figures(tmp_path: Path) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("bisect.py", "colorsys.py", "fnmatch.py"):
        shutil.copy(stdlib / name, tmp_path / name)
    out = subprocess.run(
        [sys.executable, str(BENCH), "--stdlib", str(tmp_path), "--memory", "--no-pgvector"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert re.search(r"^corpus: 3 modules, \d+ chunks; \d+ questions$", out, re.M), out
    assert re.search(r"^embedding: wordllama [\d,]+ chunks/s", out, re.M), out
    rows = re.findall(r"^\| memory (.+?) \| (\d\.\d\d) \| (\d\.\d\d) \| \d+/\d+ / \d+/\d+ \|$", out, re.M)
    assert [label for label, _, _ in rows] == [
        "hashing, vector",
        "wordllama, vector",
        "keyword (BM25)",
        "hybrid: hashing + BM25, RRF k=60",
        "hybrid: wordllama + BM25, RRF k=60",
        "hybrid: wordllama + BM25, RRF k=5 (the main job)",
    ]
    assert "share of the question's terms" in out
