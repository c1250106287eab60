"""The run's secrets: which values a `Redactor` knows, and what it hides."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.compile import compile_pipeline
from funcpipe.policy.events import Event
from funcpipe.run.logging import JsonEventLog
from funcpipe.run.redact import REDACTED, Redactor, secrets_in
from funcpipe.spec import load_spec_text

SPEC = """
version: 1
name: r
adapters:
  emb: {kind: openai, model: text-embedding-3-small, base_url: "http://127.0.0.1:9/v1"}
  gen: {kind: anthropic, model: claude-x, api_key_env: MY_ANTHROPIC_KEY}
  db: {kind: pgvector, dsn: "${DATABASE_URL}", table: t}
stages:
  - {id: load, use: source.jsonl, with: {path: items.jsonl}}
  - {id: embed, use: embed, adapter: emb}
  - {id: store, use: vector.upsert, adapter: db}
query: {adapter: gen}
"""

ENV = {
    "OPENAI_API_KEY": "sk-openai-0123456789",
    "MY_ANTHROPIC_KEY": "ant-key-abcdefgh",
    "DATABASE_URL": "postgresql://app:s3cr%40t-pass@db.example:5432/rag?sslmode=require",
    "UNRELATED": "not-a-secret-value",
}


def redactor(tmp_path: Path) -> Redactor:
    loaded = load_spec_text(SPEC, base_dir=tmp_path, env=ENV, check_sources=False)
    return Redactor.for_pipeline(compile_pipeline(loaded), ENV)


def test_a_pipeline_knows_its_env_keys_defaults_included_and_its_dsn_password(tmp_path: Path) -> None:
    assert set(redactor(tmp_path).secrets) == {
        "sk-openai-0123456789",  # api_key_env defaults to OPENAI_API_KEY
        "ant-key-abcdefgh",
        "s3cr%40t-pass",
        "s3cr@t-pass",
    }


def test_a_password_given_as_a_dsn_parameter_is_a_secret() -> None:
    assert secrets_in([{"dsn": "host=db user=app password=hunter2-long dbname=x"}], {}) == {"hunter2-long"}


def test_a_password_in_a_query_string_is_a_secret() -> None:
    assert secrets_in([{"dsn": "postgresql://db/x?user=app&password=p4ssw0rd-x"}], {}) == {"p4ssw0rd-x"}


def test_an_env_field_naming_an_unset_variable_adds_nothing() -> None:
    assert secrets_in([{"api_key_env": "NOT_SET_ANYWHERE"}], {}) == set()


def test_every_occurrence_is_replaced() -> None:
    redact = Redactor(["sk-live-123456"])
    assert redact("a sk-live-123456 b sk-live-123456") == f"a {REDACTED} b {REDACTED}"


def test_values_shorter_than_six_characters_are_not_hidden() -> None:
    assert Redactor(["abc"])("abc abc") == "abc abc"


def test_a_secret_containing_another_is_hidden_whole() -> None:
    redact = Redactor(["secret", "secret-and-more"])
    assert redact("x secret-and-more y") == f"x {REDACTED} y"


def test_scrub_redacts_strings_at_any_depth_and_keeps_the_rest() -> None:
    redact = Redactor(["sk-live-123456"])
    value = {"msg": "key sk-live-123456", "meta": {"n": 3, "tb": ["at sk-live-123456", None]}}
    assert redact.scrub(value) == {"msg": f"key {REDACTED}", "meta": {"n": 3, "tb": [f"at {REDACTED}", None]}}


def test_json_event_log_redacts_event_data_and_notices() -> None:
    out = io.StringIO()
    log = JsonEventLog(out, redact=Redactor(["tenant-secret-1"]))
    log(Event("limited", "embed", "i", data={"key": "tenant-secret-1", "cost": 1}))
    log.notice("draining for tenant-secret-1")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["data"] == {"key": REDACTED, "cost": 1}
    assert second["message"] == f"draining for {REDACTED}"


_SECRET = st.text(alphabet="abcdef0123456789-_", min_size=6, max_size=24)


@settings(max_examples=200, derandomize=True)
@given(secrets=st.lists(_SECRET, min_size=1, max_size=4), parts=st.lists(st.text(max_size=20), max_size=5))
def test_no_secret_survives_redaction(secrets: list[str], parts: list[str]) -> None:
    text = "".join(p + s for p, s in zip(parts, secrets * 3, strict=False)) + "".join(secrets)
    redacted = Redactor(secrets)(text)
    assert not any(s in redacted for s in secrets)
