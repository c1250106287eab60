"""Peak memory of ``sink.jsonl`` as the item count grows, against the same pipeline writing to stdout.

Generates a JSON Lines source of ``--small`` and ``--large`` items and runs
``source.jsonl -> sink.jsonl`` through ``funcpipe run`` (a subprocess, one
per run), then the same pipeline with ``sink.stdout`` (its output thrown
away) as the baseline, which holds nothing per item. Each run's peak RSS is
read from its own ``wait4`` resource usage. It prints both peaks at both
sizes, and the growth from the small run to the large one: a sink that
holds every id in memory grows with the item count, one that does not
stays flat like the baseline.

Run it as ``python bench/sink_memory.py --small 10000 --large 200000``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SPEC = """version: 1
name: sink-memory
stages:
  - {{id: load, use: source.jsonl, with: {{path: items.jsonl, id_field: k, text_field: t}}}}
  - {{id: out, use: {sink}, with: {{{settings}}}}}
"""


def write_items(path: Path, n: int) -> None:
    """``n`` small JSON objects, one per line."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"k": f"item-{i:08d}", "t": f"text of item {i}"}) + "\n")


def peak_rss_mb(directory: Path, sink: str) -> float:
    """Run the pipeline with ``sink`` in ``directory``; the process's peak RSS in MB."""
    settings = "path: out.jsonl" if sink == "sink.jsonl" else "format: json"
    spec = directory / f"{sink}.yaml"
    spec.write_text(SPEC.format(sink=sink, settings=settings), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "funcpipe", "run", str(spec), "--quiet", "--fresh"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"funcpipe run ({sink}) exited with {proc.returncode}: {stderr}")
    return usage.ru_maxrss / 1024  # kilobytes on Linux


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--small", type=int, default=10_000, help="items in the small run")
    p.add_argument("--large", type=int, default=200_000, help="items in the large run")
    args = p.parse_args(argv)
    if not 1 <= args.small < args.large:
        p.error("need 1 <= --small < --large")
    root = Path(tempfile.mkdtemp(prefix="funcpipe-sink-memory-"))
    try:
        peaks: dict[tuple[str, int], float] = {}
        for n in (args.small, args.large):
            run_dir = root / str(n)
            run_dir.mkdir()
            write_items(run_dir / "items.jsonl", n)
            for sink in ("sink.stdout", "sink.jsonl"):
                peaks[(sink, n)] = peak_rss_mb(run_dir, sink)
        for sink in ("sink.stdout", "sink.jsonl"):
            small, large = peaks[(sink, args.small)], peaks[(sink, args.large)]
            print(
                f"{sink}: peak RSS {small:.1f} MB at {args.small:,} items, {large:.1f} MB at {args.large:,}; "
                f"growth {large / small:.2f}x"
            )
        ratio = peaks[("sink.jsonl", args.large)] / peaks[("sink.stdout", args.large)]
        print(f"sink.jsonl at {args.large:,} items: {ratio:.2f}x the stdout baseline")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
