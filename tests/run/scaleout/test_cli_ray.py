"""``funcpipe run --executor ray`` as a real subprocess: it starts its own local Ray, runs, reports, stops it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e._support import fetch
from tests.pg import shared_dsn, unique_name

pytestmark = pytest.mark.slow

pytest.importorskip("ray")

DOCS = 12


def test_run_with_the_ray_executor_from_the_command_line(tmp_path: Path) -> None:
    table = unique_name("cli_ray")
    (tmp_path / "docs").mkdir()
    for i in range(DOCS):
        (tmp_path / "docs" / f"d{i}.md").write_text(f"# Note {i}\n\nSomething worth keeping, number {i}.\n")
    spec = tmp_path / "cli.yaml"
    spec.write_text(
        "version: 1\n"
        "name: cli\n"
        "adapters:\n"
        "  embedder: {kind: hashing, dim: 8}\n"
        f'  store: {{kind: pgvector, table: {table}, dsn: "${{CLI_DSN}}"}}\n'
        "stages:\n"
        '  - {id: load, use: source.files, with: {path: docs, glob: "*.md"}}\n'
        "  - {id: chunk, use: text.chunk}\n"
        "  - {id: embed, use: embed, adapter: embedder}\n"
        "  - {id: store, use: vector.upsert, adapter: store}\n"
    )
    report_path = tmp_path / "report.json"
    env = {**os.environ, "CLI_DSN": shared_dsn()}
    env.pop("RAY_ADDRESS", None)
    command = ["run", str(spec), "--executor", "ray", "--workers", "2", "--report", str(report_path)]
    ran = subprocess.run(
        [sys.executable, "-m", "funcpipe", *command],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    assert f"ray: {DOCS} source items in 2 shards" in ran.stderr
    assert f"{DOCS} source item(s): {DOCS} done" in ran.stderr
    report = json.loads(report_path.read_text())
    assert report["executor"]["kind"] == "ray" and report["executor"]["workers"] == 2
    assert report["accounting"]["invariant_holds"] is True
    rows = fetch(shared_dsn(), f'SELECT count(DISTINCT source_id) AS n FROM "{table}"')
    assert rows[0]["n"] == DOCS
