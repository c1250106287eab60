"""What every HTTP adapter shares, one module per job.

- `_errors`: the taxonomy, every HTTP status and httpx exception as an
  `funcpipe.core.ErrCode`, with the provider's own message kept (redacted);
- `_retry_after`: how long a provider asks us to wait (``retry-after-ms``,
  ``Retry-After`` in seconds or as an HTTP date, ``x-ratelimit-reset-*``,
  ``anthropic-ratelimit-*-reset``);
- `_client`: `HTTPAdapter` and `post_json`, the key read at call time, never
  sent in clear to a non-loopback host, no redirect followed;
- `_embedder`: `HTTPEmbedder`, the fingerprint, batch limit and batching of
  the embedding providers, and the check of the vectors they return;
- `_usage`: the token usage a provider reports, passed to the call's meter.

Redaction, the fifth job, is decided in `funcpipe._redact`, shared with the runner.
"""

from __future__ import annotations

from funcpipe._redact import REDACTED, redact
from funcpipe.adapters.http._client import HTTPAdapter, HTTPSettings, join_url, post_json, read_secret
from funcpipe.adapters.http._embedder import (
    EmbedCall,
    HTTPEmbedder,
    check_vectors,
    embed_in_batches,
    unknown_dimension,
)
from funcpipe.adapters.http._errors import (
    error,
    exception_error,
    malformed,
    provider_error,
    response_error,
    status_code_to_err,
)
from funcpipe.adapters.http._retry_after import parse_go_duration, parse_retry_after
from funcpipe.adapters.http._usage import report_generation

__all__ = [
    "REDACTED",
    "EmbedCall",
    "HTTPAdapter",
    "HTTPEmbedder",
    "HTTPSettings",
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
