"""Tests run on virtual time: a retry schedule of minutes takes milliseconds, and its waits are exact."""

from __future__ import annotations

from pathlib import Path

from tests.pipetest._support import only, run, write

TEN_429S = """\
- name: ten rate limits, thirty seconds each
  adapters:
    embedder:
      kind: scripted
      dim: 64
      script: [{status: 429, retry_after: 30s, times: 10}]
  set:
    policies.api.retry.max_attempts: 11
    policies.api.retry.backoff: {kind: fixed, initial: 100ms, max: 1m}
  inputs: {load: {files: {a.md: "one short text"}}}
  expect:
    policy:
      embed: {attempts: 11, retries: 10, failures: {RATE_LIMIT: 10}, waited: 5m}
    dead_letters: []
    report: {status: ok, accounting: {done: 1}}
"""


def test_ten_429s_with_30s_of_retry_after_take_five_virtual_minutes_and_under_two_real_seconds(tmp_path: Path) -> None:
    case = only(run(write(tmp_path, TEN_429S)))

    assert case.status == "passed", case.problems
    assert case.virtual >= 300.0
    # Generous: the run itself takes about a tenth of a second on an idle machine.
    assert case.duration < 2.0


def test_the_waits_are_exactly_the_servers_retry_after(tmp_path: Path) -> None:
    path = write(tmp_path, TEN_429S.replace("waited: 5m", "waits: [" + ", ".join(["30s"] * 10) + "]"))
    case = only(run(path))
    assert case.status == "passed", case.problems


def test_a_delay_longer_than_the_attempt_timeout_is_a_timeout_of_that_attempt(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - name: a slow answer times out
          adapters:
            embedder: {kind: scripted, dim: 64, script: [{answer: ok, delay: 2m}]}
          set: {policies.api.timeout: 30s}
          inputs: {load: {files: {a.md: "one short text"}}}
          expect:
            policy:
              embed: {attempts: 2, failures: {TIMEOUT: 1}, waits: [1s]}
            report: {status: ok}
        """,
    )
    case = only(run(path))
    assert case.status == "passed", case.problems
    assert 31.0 <= case.virtual < 120.0


def test_a_breaker_opens_after_its_failures_and_fails_the_next_attempt_fast(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - name: the breaker opens
          adapters:
            embedder: {kind: scripted, dim: 64, script: [{status: 503, times: 50}]}
          set:
            policies.api.circuit_breaker: {failures: 2, min_calls: 2, ratio: 0.5, window: 1m, reset_after: 10s}
          inputs: {load: {files: {a.md: "one short text", b.md: "another text"}}}
          expect:
            policy:
              embed: {breaker: [open], attempts: 2, failures: {CIRCUIT_OPEN: 1, TRANSIENT: 2}, waits: [1s, 2s]}
            dead_letters: [{stage: embed, code: CIRCUIT_OPEN, count: 2}]
            report: {status: failed, accounting: {failed: 2}}
        """,
    )
    case = only(run(path))
    assert case.status == "passed", case.problems
