"""Stages are connected by bounded buffers: memory does not grow with the input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import asyncio, contextlib, json, resource, sys
from pathlib import Path
from funcpipe.compile import compile_pipeline
from funcpipe.run import RunOptions, run_pipeline
from funcpipe.spec import load_spec

@contextlib.asynccontextmanager
async def no_resources(state, clock):
    yield None

spec = Path(sys.argv[1])
report = asyncio.run(run_pipeline(compile_pipeline(load_spec(spec)), RunOptions(resources=no_resources)))
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_kib": peak_kib, "accounting": report.accounting}))
"""

SPEC = """
version: 1
name: mem
stages:
  - {id: load, use: source.jsonl, with: {path: items.jsonl, text_field: text}}
  - {id: clean, use: text.clean}
  - {id: upper, use: map, with: {fn: "tests.run.user_fns:upper"}}
  - {id: keep, use: filter, with: {fn: "tests.run.user_fns:keep_all"}}
"""


def measure(tmp: Path, n: int) -> dict[str, object]:
    d = tmp / str(n)
    d.mkdir()
    with (d / "items.jsonl").open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": i, "text": f"item number {i} with a little text to carry"}) + "\n")
    (d / "spec.yaml").write_text(SPEC)
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(d / "spec.yaml")], capture_output=True, text=True, timeout=600, cwd=repo
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_peak_rss_for_200k_items_is_within_1_3x_of_20k(tmp_path: Path) -> None:
    small = measure(tmp_path, 20_000)
    large = measure(tmp_path, 200_000)
    assert small["accounting"]["done"] == 20_000  # type: ignore[index]
    assert large["accounting"]["done"] == 200_000  # type: ignore[index]
    ratio = large["peak_kib"] / small["peak_kib"]  # type: ignore[operator]
    assert ratio <= 1.3, (
        f"peak RSS grew {ratio:.2f}x for 10x the items ({small['peak_kib']} -> {large['peak_kib']} KiB)"
    )
