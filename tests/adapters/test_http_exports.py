"""The surface of `funcpipe.adapters.http` the provider adapters build on is exactly what we mean."""

from __future__ import annotations

import funcpipe.adapters.http as http

EXPECTED = [
    "EmbedCall",
    "HTTPAdapter",
    "HTTPEmbedder",
    "HTTPSettings",
    "REDACTED",
    "check_vectors",
    "embed_in_batches",
    "error",
    "exception_error",
    "join_url",
    "malformed",
    "parse_go_duration",
    "parse_retry_after",
    "post_json",
    "provider_error",
    "read_secret",
    "redact",
    "report_generation",
    "response_error",
    "status_code_to_err",
    "unknown_dimension",
]


def test_the_http_package_exports_exactly_the_shared_helpers() -> None:
    assert sorted(http.__all__) == EXPECTED
    assert all(hasattr(http, name) for name in http.__all__)


def test_the_http_package_redacts_as_the_runner_does() -> None:
    from funcpipe import _redact

    assert (http.REDACTED, http.redact) == (_redact.REDACTED, _redact.redact)
