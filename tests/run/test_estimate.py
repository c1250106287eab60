"""The dry-run estimate's chunk model and bounds, against the real chunker where it matters."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.compile import compile_pipeline
from funcpipe.run.estimate import CHUNK_TOLERANCE, chunk_sizes, estimate
from funcpipe.spec import load_spec_text
from funcpipe.stages.config import ChunkConfig, CleanConfig
from funcpipe.stages.text import clean_text, split_text

REPO = Path(__file__).resolve().parents[2]


def config(size: int, overlap: int) -> ChunkConfig:
    return ChunkConfig(size=size, overlap=overlap)


def test_an_empty_text_has_no_chunk() -> None:
    assert chunk_sizes(0, config(800, 100)) == []


def test_a_text_that_fits_is_one_chunk_of_its_size() -> None:
    assert chunk_sizes(800, config(800, 100)) == [800]


@settings(max_examples=200, derandomize=True)
@given(size=st.integers(16, 4000), overlap_part=st.floats(0, 0.95), length=st.integers(1, 200_000))
def test_never_fewer_chunks_than_the_size_allows_and_they_cover_the_text(
    size: int, overlap_part: float, length: int
) -> None:
    cfg = config(size, min(size - 1, int(size * overlap_part)))
    sizes = chunk_sizes(length, cfg)
    assert len(sizes) >= math.ceil(length / size)
    assert sum(sizes) >= length - len(sizes)  # rounding each chunk may lose under one character
    assert max(sizes) <= size


@pytest.mark.parametrize(("size", "overlap"), [(200, 0), (400, 50), (800, 100), (1500, 200), (512, 128)])
def test_chunk_counts_of_the_project_docs_are_within_the_stated_tolerance(size: int, overlap: int) -> None:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
    cfg = config(size, overlap)
    estimated = sum(len(chunk_sizes(p.stat().st_size, cfg)) for p in files)
    actual = sum(
        len(split_text(clean_text(p.read_text(encoding="utf-8"), CleanConfig()), size, overlap)) for p in files
    )
    assert abs(estimated - actual) <= CHUNK_TOLERANCE * actual, (estimated, actual)


SPEC = """
version: 1
name: e
adapters:
  emb: {kind: openai, model: text-embedding-3-small, base_url: "http://127.0.0.1:9/v1", max_batch: 10}
policies:
  api: {rate_limit: {requests: 2, per: 1s, burst: 9, cost: items}, concurrency: 2}
stages:
  - {id: load, use: source.jsonl, with: {path: items.jsonl}}
  - {id: embed, use: embed, adapter: emb, policy: api, batch: {size: auto}}
"""


def test_requests_use_the_batch_filled_to_max_batch_and_the_rate_bound_its_cost(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text("".join(f'{{"text": "t{i}"}}\n' for i in range(25)) + "\n")
    loaded = load_spec_text(SPEC, base_dir=tmp_path)
    embed = estimate(compile_pipeline(loaded), latency=0.5)[1]
    assert (embed.inputs, embed.requests, embed.batch) == (25, 3, "batch 10 (auto)")
    assert embed.min_s_rate == pytest.approx((25 - 9) / 2)  # cost: items, after a burst of 9
    assert embed.min_s_concurrency == pytest.approx(3 * 0.5 / 2)
    assert embed.min_s == embed.min_s_rate


def test_a_missing_source_estimates_nothing(tmp_path: Path) -> None:
    # A missing source is a spec error unless the stage allows it to be empty.
    spec = SPEC.replace("{path: items.jsonl}", "{path: items.jsonl, allow_empty: true}")
    loaded = load_spec_text(spec, base_dir=tmp_path)
    load, embed = estimate(compile_pipeline(loaded))
    assert (load.outputs, embed.inputs, embed.requests, embed.min_s) == (0, 0, 0, None)
