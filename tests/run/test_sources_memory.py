"""A large file streams: peak memory of a real run stays within 3x the file plus a constant."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

MB = 1 << 20
SIZE = 50 * MB
CONSTANT = 40 * MB
"""Allowed above the tiny run's peak besides 3x the file (measured: the big run peaks 2.86x the file above it)."""

_WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while"]

_PEAK = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-m", "funcpipe", "run", "-q", sys.argv[1]], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def write_corpus(path: Path, size: int) -> None:
    rng = random.Random(0)
    path.parent.mkdir(parents=True)
    with path.open("w", encoding="utf-8") as fh:
        n = 0
        while n < size:
            if rng.random() < 0.05:
                block = f"# Heading {n}\n\n"
            else:
                sentences = (" ".join(rng.choices(_WORDS, k=rng.randint(5, 20))).capitalize() + "." for _ in range(4))
                block = " ".join(sentences) + "\n\n"
            fh.write(block)
            n += len(block)


def peak_rss(tmp: Path, name: str, size: int) -> int:
    write_corpus(tmp / name / "doc.md", size)
    spec = tmp / f"{name}.yaml"
    spec.write_text(
        f"version: 1\nname: {name}\nstages:\n"
        f"  - {{id: load, use: source.files, with: {{path: {name}, max_bytes: 1000000000}}}}\n"
        "  - {id: clean, use: text.clean}\n"
        "  - {id: chunk, use: text.chunk}\n"
        f"  - {{id: out, use: sink.jsonl, with: {{path: {name}.jsonl}}}}\n"
    )
    out = subprocess.run([sys.executable, "-c", _PEAK, str(spec)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_peak_memory_is_at_most_three_times_the_file_plus_a_constant(tmp_path: Path) -> None:
    tiny = peak_rss(tmp_path, "tiny", 2000)
    big = peak_rss(tmp_path, "big", SIZE)
    assert big <= tiny + 3 * SIZE + CONSTANT, f"peak {big / MB:.0f} MB, tiny run {tiny / MB:.0f} MB"
    chunks = (tmp_path / "big.jsonl").read_text().count("\n")
    assert chunks > SIZE // 1000
