"""Tests of funcpipe.adapters.wordllama: the local semantic embedder, offline, on a worker thread."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from funcpipe.adapters import wordllama
from funcpipe.adapters.config import WordLlamaConfig
from funcpipe.adapters.wordllama import WordLlamaEmbedder, create
from funcpipe.core import Err, ErrCode, Ok
from funcpipe.errors import RunError
from funcpipe.ports import EmbedPort, Fingerprint

FAST = settings(max_examples=40, derandomize=True, deadline=None)


def _embed(texts: Sequence[str], **config: object) -> list[list[float]]:
    embedder = WordLlamaEmbedder(WordLlamaConfig.model_validate(config))
    res = asyncio.run(embedder.embed_batch(list(texts))())
    assert isinstance(res, Ok), res
    out = []
    for r in res.value:
        assert isinstance(r, Ok), r
        out.append(list(r.value))
    return out


def _cos(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_create_gives_an_embed_port_with_its_fingerprint() -> None:
    embedder = create(WordLlamaConfig(), resources=None)  # type: ignore[arg-type]
    assert isinstance(embedder, EmbedPort)
    assert embedder.fingerprint == Fingerprint("wordllama", "l2_supercat-mean-l2", 256)
    assert create(WordLlamaConfig(dim=64), None).fingerprint.dim == 64  # type: ignore[arg-type]
    assert embedder.max_batch == 256


def test_only_the_dimensions_the_model_was_trained_for_are_accepted() -> None:
    with pytest.raises(ValidationError, match="64, 128 or 256"):
        WordLlamaConfig.model_validate({"dim": 100})


def test_vectors_are_unit_length_with_the_configured_dimension() -> None:
    for dim in (64, 128, 256):
        (vec,) = _embed(["a sorted list keeps its order"], dim=dim)
        assert len(vec) == dim
        assert math.sqrt(sum(x * x for x in vec)) == pytest.approx(1.0, abs=1e-5)


def test_a_truncated_vector_is_the_normalised_prefix_of_the_model_mean() -> None:
    model = wordllama._model("l2_supercat")
    ids = model.tokenizer.encode("parse command line options", add_special_tokens=False).ids
    mean = model.table[ids].mean(axis=0)
    for dim in (64, 256):
        expected = mean[:dim] / math.sqrt(float((mean[:dim] ** 2).sum()))
        (vec,) = _embed(["parse command line options"], dim=dim)
        assert vec == pytest.approx(expected.tolist(), abs=1e-5)


def test_text_without_tokens_embeds_to_zero() -> None:
    assert set(_embed([""])[0]) == {0.0}


def test_meaning_outweighs_shared_words() -> None:
    question, near, far = _embed(
        [
            "read and write compressed archive files",
            "create a zip file and extract its members",
            "write a sorted list of employees to read later",
        ]
    )
    assert _cos(question, near) > _cos(question, far)


@FAST
@given(st.lists(st.text(max_size=80), min_size=1, max_size=6), st.integers(min_value=0, max_value=5))
def test_a_vector_does_not_depend_on_its_batch(texts: list[str], pick: int) -> None:
    pick %= len(texts)
    together = _embed(texts)
    alone = _embed([texts[pick]])
    assert together[pick] == alone[0]  # exactly: the same sums in the same order


def test_embedding_runs_off_the_event_loop_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = wordllama.embed_texts

    def recording(*args: object) -> list[list[float]]:
        threads.append(threading.get_ident())
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(wordllama, "embed_texts", recording)

    async def main() -> int:
        embedder = WordLlamaEmbedder(WordLlamaConfig())
        assert isinstance(await embedder.embed_batch(["some text"])(), Ok)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads and threads[0] != loop_thread


def test_an_empty_batch_is_an_empty_list() -> None:
    assert _embed([]) == []


def test_a_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wordllama.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RunError, match=r"pip install .*wordllama"):
        WordLlamaEmbedder(WordLlamaConfig())


def test_missing_weights_are_a_service_error_not_a_crash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    embedder = WordLlamaEmbedder(WordLlamaConfig())
    monkeypatch.setattr(wordllama, "_models", {})
    monkeypatch.setattr(wordllama, "package_files", lambda model: (tmp_path / "none", tmp_path / "none.json"))
    res = asyncio.run(embedder.embed_batch(["text"])())
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.SERVICE_SPECIFIC


def test_loading_and_embedding_open_no_socket(tmp_path: Path) -> None:
    # A fresh process (nothing loaded yet), no cache in HOME, and an audit hook
    # that fails on any network socket, name lookup or connection: the files
    # must come from the package itself.
    script = textwrap.dedent(
        """
        import asyncio, socket, sys

        def guard(event, args):
            # The event loop's own wake-up pipe is an AF_UNIX socket pair; anything else is network.
            local = event == "socket.__new__" and args[1] == socket.AF_UNIX
            if event.startswith("socket.") and not local:
                raise RuntimeError(f"network use: {event} {args}")

        sys.addaudithook(guard)
        from funcpipe.adapters.config import WordLlamaConfig
        from funcpipe.adapters.wordllama import WordLlamaEmbedder

        res = asyncio.run(WordLlamaEmbedder(WordLlamaConfig()).embed_batch(["offline please"])())
        vec = res.value[0].value
        print(len(vec), "wordllama" in sys.modules)
        """
    )
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "0"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["256", "False"]  # and the package itself was never imported
    assert not list(tmp_path.iterdir())  # no cache written
