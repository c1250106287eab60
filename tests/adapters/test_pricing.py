"""Prices as data: the shipped table, an adapter's own ``price:``, and what neither changes (adapters.pricing)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import funcpipe
from funcpipe.adapters.pricing import AS_OF, PRICES, known_price
from funcpipe.errors import SpecError
from funcpipe.policy.budget import DEFAULT_CHARS_PER_TOKEN
from funcpipe.policy.models import Price

SPEC = """version: 1
name: priced
{top}
adapters:
  embedder: {embedder}
  store: {{kind: memory}}
stages:
  - {{id: load, use: source.files, with: {{path: docs, glob: "*.md"}}}}
  - {{id: embed, use: embed, adapter: embedder}}
  - {{id: store, use: vector.upsert, adapter: store}}
"""


def _load(tmp_path: Path, embedder: str, top: str = "") -> funcpipe.Pipeline:
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "a.md").write_text("x" * 700, encoding="utf-8")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(embedder=embedder, top=top), encoding="utf-8")
    return funcpipe.load(spec, env={"OPENAI_API_KEY": "k"})


def test_the_table_is_dated_and_every_price_is_a_valid_price() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", AS_OF)
    assert {"openai", "cohere", "anthropic", "ollama"} <= set(PRICES)
    for models in PRICES.values():
        for price in models.values():
            assert isinstance(price, Price) and min(price.input, price.output, price.request) >= 0


def test_known_models_are_priced_and_others_are_not() -> None:
    assert known_price("openai", "text-embedding-3-small") == Price(input=0.02)
    assert known_price("anthropic", "claude-sonnet-4-5") == Price(input=3.0, output=15.0)
    assert known_price("openai", "my-finetune") is None
    assert known_price("hashing", None) is None
    # Ollama runs on your own machine: every model, whatever its tag, is free.
    assert known_price("ollama", "nomic-embed-text:v1.5") == Price()


def test_an_adapter_takes_the_table_price_unless_it_states_its_own(tmp_path: Path) -> None:
    listed = _load(tmp_path, "{kind: openai, model: text-embedding-3-small}")
    own = _load(tmp_path, "{kind: openai, model: text-embedding-3-small, price: {input: 1.5}, chars_per_token: 4}")
    unlisted = _load(tmp_path, "{kind: openai, model: my-finetune, dimensions: 8}")
    a, b, c = (p.compiled.adapters["embedder"] for p in (listed, own, unlisted))
    assert (a.price, a.chars_per_token) == (Price(input=0.02), DEFAULT_CHARS_PER_TOKEN)
    assert (b.price, b.chars_per_token) == (Price(input=1.5), 4.0)
    assert c.price is None
    assert own.estimate().cost == pytest.approx(175 / 1e6 * 1.5)  # 700 characters at 4 per token
    assert unlisted.estimate().cost is None


def test_prices_ratios_and_budgets_never_change_what_a_run_would_redo(tmp_path: Path) -> None:
    plain = _load(tmp_path, "{kind: openai, model: text-embedding-3-small}")
    priced = _load(
        tmp_path,
        "{kind: openai, model: text-embedding-3-small, price: {input: 9}, chars_per_token: 2}",
        top="budget: {requests: 3}",
    )
    assert plain.compiled.resume_keys == priced.compiled.resume_keys


def test_a_budget_without_a_limit_and_a_negative_price_are_located_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as empty:
        _load(tmp_path, "{kind: hashing}", top="budget: {}")
    assert "a budget needs a limit: requests, tokens or cost" in str(empty.value)
    assert "spec.yaml:3:" in str(empty.value)
    with pytest.raises(SpecError) as negative:
        _load(tmp_path, "{kind: hashing, price: {input: -1}}")
    assert "embedder.price.input" in str(negative.value)
