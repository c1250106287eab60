"""The one redaction (funcpipe/_redact.py): no secret it is given, nor any credential shape, survives."""

from __future__ import annotations

import string

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from funcpipe._redact import MIN_SECRET, REDACTED, Redaction, dsn_passwords, redact, redact_dsn, secret_values
from funcpipe.run.accounting import Failures, shorten

# What keys are made of. No whitespace: the failure summary collapses
# whitespace runs, which could otherwise join two halves into a secret.
KEY_CHARS = string.ascii_letters + string.digits + "-_.~+/="


def _secret() -> st.SearchStrategy[str]:
    # A secret inside the marker itself ("REDACTED") would be spelled by every
    # replacement, and one ending in "." by the "..." a cut appends.
    return st.text(KEY_CHARS, min_size=MIN_SECRET, max_size=40).filter(
        lambda s: s not in REDACTED and not s.endswith(".")
    )


@settings(max_examples=300, derandomize=True)
@given(
    secrets=st.lists(_secret(), min_size=1, max_size=4),
    parts=st.lists(st.text(max_size=40), min_size=1, max_size=6),
    shapes=st.booleans(),
    limit=st.integers(min_value=0, max_value=400),
)
def test_no_secret_survives_redaction_nor_a_cut_after_it(
    secrets: list[str], parts: list[str], shapes: bool, limit: int
) -> None:
    text = "".join(p + s for p, s in zip(parts, secrets * len(parts), strict=False)) + secrets[0]
    redacted = redact(text, secrets, shapes=shapes)
    for out in (redacted, shorten(redacted, limit), redacted[:limit]):
        assert not any(s in out for s in secrets)


@settings(max_examples=200, derandomize=True)
@given(secret=_secret(), position=st.integers(min_value=0, max_value=600), length=st.integers(0, 700))
def test_the_failure_summary_keeps_no_piece_of_a_secret_wherever_it_is_cut(
    secret: str, position: int, length: int
) -> None:
    # Filler made of characters no key has, so any run of them from the secret is a leak.
    filler = "# " * (max(position, length) // 2 + 1)
    failures = Failures(redact=Redaction([secret], shapes=False))
    failures.add("embed", "AUTH", filler[:position] + secret + filler[:length])
    (group,) = failures
    pieces = {secret[i : i + 4] for i in range(len(secret) - 3)}
    assume(not any(p in REDACTED for p in pieces))
    assert not any(p in group.first_message for p in pieces)


def test_a_secret_containing_another_is_hidden_whole() -> None:
    assert redact("x secret-and-more y", ["secret", "secret-and-more"]) == f"x {REDACTED} y"


def test_values_shorter_than_the_minimum_are_not_secrets() -> None:
    assert secret_values(["abc", "abcdef", "abcdef", "abcdefgh"]) == ("abcdefgh", "abcdef")


def test_shapes_are_hidden_only_when_asked() -> None:
    text = "Authorization: Bearer abcdefgh12345678"
    assert redact(text) == f"Authorization: {REDACTED}"
    assert redact(text, shapes=False) == text


def test_redaction_is_idempotent_on_its_own_output() -> None:
    once = redact("api_key=hunter2hunter2 and Bearer abcdefgh12345678 and sk-proj-ABCDEFGH1234")
    assert redact(once) == once


def test_dsn_passwords_are_found_as_written_and_decoded() -> None:
    assert dsn_passwords("postgresql://app:s3cr%40t-pass@db/x") == {"s3cr%40t-pass", "s3cr@t-pass"}
    assert dsn_passwords("host=db password=hunter2-long dbname=x") == {"hunter2-long"}


def test_redact_dsn_masks_every_password_form() -> None:
    assert redact_dsn("postgresql://me:pw@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact_dsn("postgresql://db/x?user=me&password=pw&sslmode=require") == (
        "postgresql://db/x?user=me&password=***&sslmode=require"
    )
    assert redact_dsn("postgresql://db/x") == "postgresql://db/x"
