"""The qdrant, chroma and lancedb store configs as a user meets them: the spec, the extras, the secrets.

What the stores do is the contract suite's (test_store_contract.py); here are
the located spec errors for a key sent in clear or a bad name, the message
that names the extra to install when a store's client is missing, and the
rule that a store's URL credentials never reach an error.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from funcpipe.adapters._store_common import import_client
from funcpipe.adapters.chroma import ChromaStore
from funcpipe.adapters.config import ChromaConfig, QdrantConfig
from funcpipe.adapters.qdrant import QdrantStore
from funcpipe.core import Err
from funcpipe.errors import RunError
from funcpipe.ports import Fingerprint
from funcpipe.run.resources import RunResources
from funcpipe.spec import check_spec

SPEC = """version: 1
name: t
adapters:
  store: STORE
  embedder: {kind: hashing, dim: 8}
stages:
  - {id: load, use: source.files, with: {path: docs}}
  - {id: embed, use: embed, adapter: embedder}
  - {id: store, use: vector.upsert, adapter: store}
"""


def spec_with(tmp_path: Path, store: str) -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "a.md").write_text("# A\n\nSome text.\n", encoding="utf-8")
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("STORE", store), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("store", "field", "valid"),
    [
        ("{kind: qdrant}", None, True),
        ("{kind: qdrant, url: http://192.0.2.1:6333, api_key_env: QDRANT_KEY}", "url", False),
        ("{kind: qdrant, url: http://192.0.2.1:6333, api_key_env: QDRANT_KEY, allow_insecure_http: true}", None, True),
        ("{kind: qdrant, url: https://192.0.2.1:6333, api_key_env: QDRANT_KEY}", None, True),
        ("{kind: qdrant, url: http://127.0.0.1:6333, api_key_env: QDRANT_KEY}", None, True),
        ("{kind: qdrant, url: http://192.0.2.1:6333}", None, True),
        ("{kind: chroma, url: http://192.0.2.1:8000, api_key_env: CHROMA_TOKEN}", "url", False),
        ("{kind: chroma, url: http://localhost:8000, api_key_env: CHROMA_TOKEN}", None, True),
        (
            "{kind: lancedb, uri: db://x, host_override: http://192.0.2.1, api_key_env: LANCEDB_KEY}",
            "host_override",
            False,
        ),
        ("{kind: lancedb, uri: db://x, host_override: https://192.0.2.1, api_key_env: LANCEDB_KEY}", None, True),
    ],
)
def test_a_key_over_plain_http_to_another_host_is_a_located_error(
    tmp_path: Path, store: str, field: str | None, valid: bool
) -> None:
    check = check_spec(spec_with(tmp_path, store), env={}, check_env=False)
    assert check.valid == valid, check.errors
    if not valid:
        [error] = check.errors
        assert error.path == f"adapters.store.{field}"
        assert (error.line, error.col) == (4, store.index("http://") + 10)
        assert "192.0.2.1" in error.message
        assert "allow_insecure_http: true" in (error.hint or "")


@pytest.mark.parametrize(
    ("store", "field"),
    [
        ("{kind: chroma, collection: ab}", "collection"),
        ("{kind: chroma, collection: -chunks}", "collection"),
        ("{kind: qdrant, collection: a/b}", "collection"),
        ("{kind: lancedb, table: 'a b'}", "table"),
        ("{kind: qdrant, colection: chunks}", "colection"),
    ],
)
def test_a_bad_name_is_a_located_error(tmp_path: Path, store: str, field: str) -> None:
    check = check_spec(spec_with(tmp_path, store), env={}, check_env=False)
    [error] = check.errors
    assert error.path == f"adapters.store.{field}"
    assert error.line == 4


def test_check_env_requires_the_key_a_store_names(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "{kind: qdrant, url: https://q.example.com, api_key_env: FP_TEST_QDRANT_KEY}")
    check = check_spec(spec, env={}, check_env=True)
    assert [e.path for e in check.errors] == ["adapters.store.api_key_env"]
    assert "FP_TEST_QDRANT_KEY" in check.errors[0].message


@pytest.mark.parametrize(
    ("module", "extra"), [("qdrant_client", "qdrant"), ("chromadb", "chroma"), ("lancedb", "lancedb")]
)
def test_a_missing_client_names_the_extra_to_install(module: str, extra: str) -> None:
    with pytest.raises(RunError, match=rf"pip install 'funcpipe-runner\[{extra}\]'"):
        import_client(f"{module}_not_installed_here", extra, extra)


def test_a_run_without_the_client_installed_stops_with_the_extra_to_install(tmp_path: Path) -> None:
    # A stand-in package that fails to import, as a missing one does.
    shim = tmp_path / "shim" / "qdrant_client"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named qdrant_client')\n", encoding="utf-8")
    spec = spec_with(tmp_path, "{kind: qdrant}")
    proc = subprocess.run(
        [sys.executable, "-m", "funcpipe", "run", str(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path / "shim"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'funcpipe-runner[qdrant]'" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", ["qdrant", "chroma"])
async def test_credentials_in_a_server_url_never_reach_an_error(tmp_path: Path, kind: str) -> None:
    url = "http://admin:s3cr3t-in-url@127.0.0.1:9"
    async with RunResources(tmp_path) as resources:
        if kind == "qdrant":
            res = await QdrantStore(QdrantConfig(url=url, request_timeout=5), resources).count()()
        else:
            res = await ChromaStore(ChromaConfig(url=url, request_timeout=5), resources).ensure(
                Fingerprint("hashing", "m", 8)
            )()
    assert isinstance(res, Err)
    assert "s3cr3t-in-url" not in res.error.msg + repr(res.error.meta)
    assert "127.0.0.1:9" in res.error.msg
