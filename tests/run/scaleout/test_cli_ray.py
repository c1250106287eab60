"""``funcpipe run --executor ray`` as a real subprocess, stopped by SIGINT: it cancels the shards and reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Real-time rate assertions at the server: run alone, not beside another test worker (.ci/check).
pytestmark = [pytest.mark.slow, pytest.mark.exclusive]

pytest.importorskip("ray")

DOCS = 40

SPEC = """\
version: 1
name: sig
adapters:
  embedder: {kind: hashing, dim: 8}
policies:
  slow: {rate_limit: {requests: 4, per: 1s}}
stages:
  - {id: load, use: source.files, with: {path: docs, glob: "*.md"}}
  - {id: embed, use: embed, adapter: embedder, policy: slow, batch: {size: 1}}
"""


def test_sigint_stops_a_ray_run_and_the_report_accounts_for_every_item(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    for i in range(DOCS):
        (tmp_path / "docs" / f"d{i}.md").write_text(f"# Note {i}\n\nSomething worth keeping, number {i}.\n")
    spec = tmp_path / "sig.yaml"
    spec.write_text(SPEC)
    stderr = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "funcpipe", "run", str(spec), "--executor", "ray", "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        try:
            deadline = time.monotonic() + 120
            while f"ray: {DOCS} source items in 2 shards" not in stderr.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text()
                time.sleep(0.1)
            time.sleep(2)  # the shards are under way (at 4 items/s they need ten seconds)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 130, stderr.read_text()
    report = json.loads((tmp_path / ".funcpipe" / "sig.report.json").read_text())
    accounting = report["accounting"]
    assert report["status"] == "interrupted"
    assert accounting["invariant_holds"] is True
    assert accounting["sources"] == DOCS
    assert accounting["unfinished"] > 0
    assert accounting["done"] + accounting["unfinished"] == DOCS
    assert report["sync"] == []  # a stopped run deletes nothing
    assert "run again to resume" in stderr.read_text()
