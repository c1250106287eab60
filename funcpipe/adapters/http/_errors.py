"""The error taxonomy: every HTTP status and httpx exception as a code of DESIGN.md.

Every provider fails in its own words; this module turns them all into the
codes of `funcpipe.core.ErrCode`, in one place, so policies decide on codes and
nothing above the adapters ever sees an HTTP status or an httpx exception:

    401, 403                      AUTH
    429                           RATE_LIMIT   (meta.retry_after when the server says)
    408, 409, 5xx (529 included)  TRANSIENT
    other 4xx, 3xx                SERVICE_SPECIFIC
    httpx timeouts                TIMEOUT
    refused, reset, dropped       NETWORK
    unparsable or wrong body      SERVICE_SPECIFIC

Providers may override single statuses (Cohere's 498 "invalid token" is AUTH).
The provider's own message is kept in ``meta.provider_message``; every string
that leaves this module is passed through `funcpipe._redact.redact` (before
any excerpt is cut), so an API key never ends up in an error, a log or the
dead-letter file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import httpx

from funcpipe._redact import Redaction
from funcpipe.adapters.http._retry_after import parse_retry_after
from funcpipe.core import ErrCode, ErrInfo

_EXCERPT = 300


def _excerpt(text: str) -> str:
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


def error(code: str, msg: str, secrets: Sequence[str] = (), **meta: object) -> ErrInfo:
    """An `ErrInfo` whose message and string meta values are redacted (``None`` values dropped)."""
    clean = Redaction(secrets, shapes=True)
    values = {k: clean(v) if isinstance(v, str) else v for k, v in meta.items() if v is not None}
    return ErrInfo(code, clean(msg), values)


def status_code_to_err(status: int, overrides: Mapping[int, str] | None = None) -> str:
    """The taxonomy code of a non-2xx HTTP status."""
    if overrides and status in overrides:
        return overrides[status]
    if status in (401, 403):
        return ErrCode.AUTH
    if status == 429:
        return ErrCode.RATE_LIMIT
    # 408 and 409 are what OpenAI's and Anthropic's own clients retry: a request
    # that timed out server-side or lost a race, not a bad request.
    if status in (408, 409) or status >= 500:
        return ErrCode.TRANSIENT
    return ErrCode.SERVICE_SPECIFIC


def provider_error(payload: object) -> tuple[str | None, str | None]:
    """The provider's (message, error type) from an error body of any of the known shapes.

    OpenAI ``{"error": {"message", "type", "code"}}``, Anthropic
    ``{"type": "error", "error": {"type", "message"}}``, Cohere
    ``{"message"}`` and Ollama ``{"error": "..."}``.
    """
    if not isinstance(payload, Mapping):
        return None, None
    err = payload.get("error")
    if isinstance(err, Mapping):
        message = err.get("message")
        kind = err.get("code") or err.get("type")
        return (str(message) if message is not None else None, str(kind) if kind is not None else None)
    if isinstance(err, str):
        return err, None
    for key in ("message", "detail"):
        value = payload.get(key)
        if isinstance(value, str):
            return value, None
    return None, None


def _request_id(response: httpx.Response, payload: object) -> str | None:
    for name in ("x-request-id", "request-id", "x-amzn-requestid"):
        value: str | None = response.headers.get(name)
        if value:
            return value
    if isinstance(payload, Mapping):
        rid = payload.get("request_id")
        if isinstance(rid, str):
            return rid
    return None


def _endpoint(url: httpx.URL) -> str:
    return str(url.copy_with(query=None, fragment=None))


def response_error(
    response: httpx.Response,
    *,
    provider: str,
    secrets: Sequence[str] = (),
    status_codes: Mapping[int, str] | None = None,
    now: Callable[[], float] = time.time,
) -> ErrInfo:
    """The `ErrInfo` of a non-2xx response, with the provider's message in meta.

    Args:
        response: the (fully read) response.
        provider: the provider's name, for the message.
        secrets: values to redact.
        status_codes: provider-specific overrides of `status_code_to_err`.
        now: wall-clock time for HTTP-date ``Retry-After`` values.
    """
    status = response.status_code
    code = status_code_to_err(status, status_codes)
    try:
        payload: object = response.json()
    except (ValueError, UnicodeDecodeError):
        payload = None
    clean = Redaction(secrets, shapes=True)
    message, kind = provider_error(payload)
    if message is not None:
        message = clean(message)
    elif response.content:
        message = _excerpt(clean(response.text))
    reason = response.reason_phrase or "error"
    summary = f"{provider} answered {status} {reason}"
    if message:
        summary += f": {_excerpt(message)}"
    return error(
        code,
        summary,
        secrets,
        status=status,
        provider=provider,
        provider_message=message,
        error_type=kind,
        request_id=_request_id(response, payload),
        endpoint=_endpoint(response.request.url),
        retry_after=parse_retry_after(response.headers, now=now),
    )


def exception_error(exc: Exception, *, provider: str, url: str, secrets: Sequence[str] = ()) -> ErrInfo:
    """The `ErrInfo` of an exception raised while sending or reading a request."""
    if isinstance(exc, httpx.TimeoutException):
        code, what = ErrCode.TIMEOUT, "timed out"
    elif isinstance(
        exc,
        httpx.UnsupportedProtocol
        | httpx.InvalidURL
        | httpx.LocalProtocolError
        | httpx.TooManyRedirects
        | httpx.DecodingError,
    ):
        # Our URL or request is wrong, or the body cannot be decoded: retrying will not help.
        code, what = ErrCode.SERVICE_SPECIFIC, "could not be completed"
    elif isinstance(exc, httpx.TransportError | OSError):
        # Refused, reset, or dropped without an answer: the network, not the request.
        code, what = ErrCode.NETWORK, "failed on the network"
    else:
        code, what = ErrCode.SERVICE_SPECIFIC, "failed"
    detail = str(exc) or type(exc).__name__
    return error(
        code,
        f"{provider} request {what}: {type(exc).__name__}: {detail}",
        secrets,
        provider=provider,
        endpoint=url.split("?", 1)[0],
        exception=type(exc).__name__,
    )


def malformed(
    provider: str, what: str, *, secrets: Sequence[str] = (), body: str | None = None, **meta: object
) -> ErrInfo:
    """A ``SERVICE_SPECIFIC`` error for a 2xx answer we cannot use (bad JSON, wrong count...)."""
    excerpt = _excerpt(Redaction(secrets, shapes=True)(body)) if body is not None else None
    return error(
        ErrCode.SERVICE_SPECIFIC,
        f"{provider} returned an unusable response: {what}",
        secrets,
        provider=provider,
        body_excerpt=excerpt,
        **meta,
    )
