"""Helpers of the store tests: a small corpus, ``funcpipe run`` subprocesses, the rows of a table.

Every run is a real ``funcpipe`` subprocess writing to the shared embedded
PostgreSQL of `tests.pg`, reached through ``DATABASE_URL``; each test takes
fresh table names, so tests never share rows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e._support import env, fetch
from tests.pg import shared_dsn, unique_name

REPO = Path(__file__).resolve().parents[2]

FILES_SPEC = """\
version: 1
name: {name}
adapters:
  embedder: {{kind: hashing, dim: 32}}
  store: {{kind: pgvector, dsn: "${{DATABASE_URL}}", table: {table}, exact: true}}
stages:
  - {{id: load, use: source.files, with: {{path: docs, glob: "**/*.md", max_bytes: 4000}}}}
{extra}  - {{id: chunk, use: text.chunk, with: {{size: 120, overlap: 20}}}}
  - {{id: embed, use: embed, adapter: embedder, batch: {{size: 8}}}}
  - {{id: store, use: vector.upsert, adapter: store{store_with}}}
on_error: {{mode: {on_error}}}
"""

CORPUS = {
    "docs/alpha.md": "# Alpha\n\nAlpha is the first letter. It opens every list.\n\n"
    "It has two paragraphs, this is the second one.",
    "docs/beta.md": "# Beta\n\nBeta comes second. Beta tests come before releases.",
    "docs/gamma.md": "# Gamma\n\nGamma rays are short. Gamma is also a function.\n\n"
    "A third paragraph makes two chunks.",
    "docs/sub/delta.md": "# Delta\n\nDelta is a river mouth. Delta is also a difference.",
}


def files_spec(
    table: str, *, name: str = "docs", store_with: str = "", on_error: str = "continue", extra: str = ""
) -> str:
    """The files pipeline into ``table``; ``store_with`` is appended to the store stage (``, with: {...}``)."""
    return FILES_SPEC.format(name=name, table=table, store_with=store_with, on_error=on_error, extra=extra)


def write(root: Path, files: dict[str, str]) -> None:
    """Write ``files`` (relative path -> text) under ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def run(spec: Path, *args: str, **variables: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``funcpipe run SPEC ARGS`` with the test database; the process and its JSON report."""
    report = spec.with_suffix(".report.json")
    report.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "funcpipe", "run", str(spec), "--quiet", "--report", str(report), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ(**variables),
        cwd=REPO,
        check=False,
    )
    return proc, json.loads(report.read_text()) if report.exists() else {}


def environ(**variables: str) -> dict[str, str]:
    """The environment of a run: no provider settings, the test database, this repository importable."""
    return env(DATABASE_URL=shared_dsn(), PYTHONPATH=str(REPO), **variables)


def rows(table: str) -> list[dict[str, Any]]:
    """Every row of ``table``: id, text, source_id, meta and the vector's text, sorted by id."""
    recs = fetch(
        shared_dsn(),
        f'SELECT id, text, source_id, meta::text AS meta, embedding::text AS embedding FROM "{table}" ORDER BY id',
    )
    return [{**r, "meta": json.loads(r["meta"])} for r in recs]


def clean_rows(
    project: Path, spec_text: str, table_of: str, *, keep: tuple[str, ...] = ("docs",), **variables: str
) -> list[dict[str, Any]]:
    """The rows a run from scratch over ``project``'s current sources writes into a fresh table."""
    fresh = project.parent / f"{project.name}-clean-{unique_name('c')}"
    fresh.mkdir()
    for rel in keep:
        src = project / rel
        if src.is_dir():
            shutil.copytree(src, fresh / rel)
        elif src.exists():
            shutil.copy(src, fresh / rel)
    table = unique_name("clean")
    spec = fresh / "spec.yaml"
    spec.write_text(spec_text.replace(table_of, table), encoding="utf-8")
    proc, _ = run(spec, **variables)
    assert proc.returncode == 0, proc.stderr
    return rows(table)


def source_paths(table: str) -> set[str]:
    """The distinct ``meta.path`` values of ``table``."""
    return {str(r["meta"].get("path")) for r in rows(table)}


def remove(path: Path) -> None:
    """Delete a file."""
    os.remove(path)
