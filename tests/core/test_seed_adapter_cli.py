"""An adapter written as the adapter page shows it, named by import path, in a real ``funcpipe run``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.servers import Fault, OpenAIServer, hashing_embed

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["alpha beta", "gamma delta", "epsilon"]
DIM = 16

pytestmark = pytest.mark.slow


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=None, dim=DIM) as srv:
        yield srv


def _project(tmp_path: Path, server: OpenAIServer, policy: str = "") -> Path:
    lines = [json.dumps({"id": f"t{i}", "text": t}) for i, t in enumerate(TEXTS)]
    (tmp_path / "in.jsonl").write_text("".join(line + "\n" for line in lines))
    spec = tmp_path / "seed.yaml"
    spec.write_text(
        "version: 1\n"
        "name: seed\n"
        "adapters:\n"
        f'  embedder: {{kind: "tests.core.seed_adapter:KIND", base_url: "{server.origin}", model: m-small}}\n'
        + (f"policies:\n  api: {policy}\n" if policy else "")
        + "stages:\n"
        "  - {id: load, use: source.jsonl, with: {path: in.jsonl, id_field: id, text_field: text}}\n"
        "  - {id: embed, use: embed, adapter: embedder" + (", policy: api" if policy else "") + "}\n"
        "  - {id: out, use: sink.jsonl, with: {path: out.jsonl}}\n",
        encoding="utf-8",
    )
    return spec


def _run(spec: Path) -> subprocess.CompletedProcess[str]:
    # cwd is the repository, so the spec's import path resolves as a user's own package would.
    return subprocess.run(
        [sys.executable, "-m", "funcpipe", "run", str(spec)], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_page_adapter_embeds_every_item_end_to_end(tmp_path: Path, server: OpenAIServer) -> None:
    proc = _run(_project(tmp_path, server))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    by_text = {r["data"]["text"]: r for r in rows}
    assert sorted(by_text) == sorted(TEXTS)
    for text, row in by_text.items():
        assert row["data"]["embedding"] == pytest.approx(hashing_embed(text, DIM), abs=1e-6)
        assert row["meta"]["embedder"] == f"page-openai:m-small:{DIM}"
    assert server.count("/embeddings") == 1


def test_rate_limit_from_the_page_adapter_is_retried_by_a_spec_policy(tmp_path: Path, server: OpenAIServer) -> None:
    server.script(Fault.rate_limit(retry_after="0"))
    spec = _project(tmp_path, server, policy="{retry: {max_attempts: 3, backoff: {kind: immediate}}}")
    proc = _run(spec)
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == len(TEXTS)
    assert server.count("/embeddings") == 2


def test_auth_failure_from_the_page_adapter_is_dead_lettered_with_code(tmp_path: Path, server: OpenAIServer) -> None:
    server.script(Fault.auth())
    proc = _run(_project(tmp_path, server))
    assert proc.returncode == 1, proc.stderr
    dead = [json.loads(x) for x in (tmp_path / ".funcpipe" / "seed.dead.jsonl").read_text().splitlines()]
    assert len(dead) == len(TEXTS)
    assert {d["error"]["code"] for d in dead} == {"AUTH"}
