"""What every HTTP adapter shares: one request helper and the error taxonomy.

Every provider fails in its own words; this module turns them all into the
codes of DESIGN.md, in one place, so policies decide on codes and nothing
above the adapters ever sees an HTTP status or an httpx exception:

    401, 403                      AUTH
    429                           RATE_LIMIT   (meta.retry_after when the server says)
    408, 409, 5xx (529 included)  TRANSIENT
    other 4xx, 3xx                SERVICE_SPECIFIC
    httpx timeouts                TIMEOUT
    refused, reset, dropped       NETWORK
    unparsable or wrong body      SERVICE_SPECIFIC

Providers may override single statuses (Cohere's 498 "invalid token" is AUTH).
The provider's own message is kept in ``meta.provider_message``; every string
that leaves this module is passed through `redact`, so an API key never ends
up in an error, a log or the dead-letter file.
"""

from __future__ import annotations

import json
import math
import re
import time
from abc import ABC, abstractmethod
from array import array
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol

import httpx

from funcpipe.adapters.config import insecure_key_transport
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.errors import RunError, SpecError
from funcpipe.ports import Embedding, Fingerprint, Purpose

REDACTED = "[REDACTED]"

# At least 8 characters, so prose such as "Bearer auth" or "a basic error" is kept.
_BEARER = re.compile(r"(?i)\b(bearer\s+[A-Za-z0-9._~+/=*:-]{8,}|basic\s+[A-Za-z0-9+/]{8,}={0,2})")
# Provider key shapes (OpenAI sk-/sk-proj-, Anthropic sk-ant-, ...), masked or not.
_KEYLIKE = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_*-]{8,}")
_HEADER_KEY = re.compile(r"(?i)\b(x-api-key|api[-_]?key|authorization)(\s*[:=]\s*)(?:(?:bearer|basic)\s+)?[^\s,;\"']+")
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_EXCERPT = 300
_MIN_SECRET = 6


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with every secret value and anything that looks like a credential replaced.

    Args:
        text: any string that may leave the adapter (messages, provider bodies).
        secrets: exact values to hide, such as the API key read for this call.
            Values shorter than 6 characters are not keys anyone issues, and
            hiding every ``k`` would make messages unreadable, so they are skipped.
    """
    for secret in secrets:
        if len(secret) >= _MIN_SECRET:
            text = text.replace(secret, REDACTED)
    text = _HEADER_KEY.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1).split()[0]} {REDACTED}", text)
    return _KEYLIKE.sub(REDACTED, text)


def _redact_meta(meta: Mapping[str, object], secrets: Sequence[str]) -> dict[str, object]:
    return {k: redact(v, secrets) if isinstance(v, str) else v for k, v in meta.items()}


def error(code: str, msg: str, secrets: Sequence[str] = (), **meta: object) -> ErrInfo:
    """An `ErrInfo` whose message and string meta values are redacted."""
    clean = {k: v for k, v in meta.items() if v is not None}
    return ErrInfo(code, redact(msg, secrets), _redact_meta(clean, secrets))


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


def parse_go_duration(value: str) -> float | None:
    """Seconds in a Go-style duration such as ``1s``, ``6m0s``, ``20ms`` or ``1h2m3.5s``."""
    text = value.strip()
    if not text:
        return None
    pos, total = 0, 0.0
    for m in _GO_DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) else None


def _http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso_date(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _reference_time(headers: httpx.Headers, now: Callable[[], float]) -> datetime:
    # The server's own Date header, when present, makes an absolute reset time
    # immune to skew between our clock and the provider's.
    date = headers.get("date")
    parsed = _http_date(date) if date else None
    return parsed or datetime.fromtimestamp(now(), tz=UTC)


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def _provider_resets(headers: httpx.Headers, ref: datetime) -> float | None:
    """The longest reset among the provider limits that are exhausted (or not stated)."""
    waits: list[float] = []
    # OpenAI: x-ratelimit-reset-requests: "1s", x-ratelimit-reset-tokens: "6m0s".
    for kind in ("requests", "tokens"):
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        if reset is None or (remaining is not None and remaining.strip() != "0"):
            continue
        seconds = parse_go_duration(reset)
        if seconds is not None:
            waits.append(seconds)
    # Anthropic: anthropic-ratelimit-requests-reset: RFC 3339 time.
    for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
        reset = headers.get(f"anthropic-ratelimit-{kind}-reset")
        remaining = headers.get(f"anthropic-ratelimit-{kind}-remaining")
        if reset is None or (remaining is not None and remaining.strip() != "0"):
            continue
        at = _iso_date(reset)
        if at is not None:
            waits.append((at - ref).total_seconds())
    return max(waits) if waits else None


def parse_retry_after(
    headers: httpx.Headers | Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """How long the server asks us to wait, in seconds, or None if it does not say.

    Reads, in order of precision: ``retry-after-ms`` (OpenAI, Anthropic),
    ``Retry-After`` (seconds or an HTTP date), then the provider's reset
    headers for whichever limit is exhausted (OpenAI ``x-ratelimit-reset-*``,
    Anthropic ``anthropic-ratelimit-*-reset``). Negative waits become 0.

    Args:
        headers: the response headers.
        now: wall-clock time, used only when the response has no ``Date`` header.
    """
    h = headers if isinstance(headers, httpx.Headers) else httpx.Headers(headers)
    wait: float | None = None
    ms = h.get("retry-after-ms")
    if ms is not None and (value := _seconds(ms)) is not None:
        wait = value / 1000.0
    if wait is None and (ra := h.get("retry-after")) is not None:
        wait = _seconds(ra)
        if wait is None and (at := _http_date(ra)) is not None:
            wait = (at - _reference_time(h, now)).total_seconds()
    if wait is None:
        wait = _provider_resets(h, _reference_time(h, now))
    return None if wait is None else max(0.0, wait)


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


def _excerpt(text: str) -> str:
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


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
    message, kind = provider_error(payload)
    if message is None and response.content:
        message = _excerpt(response.text)
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
    return error(
        ErrCode.SERVICE_SPECIFIC,
        f"{provider} returned an unusable response: {what}",
        secrets,
        provider=provider,
        body_excerpt=_excerpt(body) if body is not None else None,
        **meta,
    )


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: Mapping[str, object],
    *,
    headers: Mapping[str, str],
    request_timeout: float,
    provider: str,
    secrets: Sequence[str] = (),
    status_codes: Mapping[int, str] | None = None,
) -> Result[Any, ErrInfo]:
    """POST ``body`` as JSON and return the decoded JSON answer, or the classified failure.

    Never raises (cancellation excepted): every transport failure, non-2xx
    status and undecodable body becomes an ``Err`` of the taxonomy.
    """
    try:
        # Redirects are never followed: one could carry the key to another host, or to plain http.
        response = await client.post(
            url, json=body, headers=dict(headers), timeout=request_timeout, follow_redirects=False
        )
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        return Err(exception_error(exc, provider=provider, url=url, secrets=secrets))
    if not response.is_success:
        return Err(response_error(response, provider=provider, secrets=secrets, status_codes=status_codes))
    try:
        return Ok(json.loads(response.content))
    except (ValueError, UnicodeDecodeError) as exc:
        return Err(
            malformed(
                provider,
                f"the body is not JSON ({exc})",
                secrets=secrets,
                body=response.text,
                status=response.status_code,
            )
        )


def read_secret(read: Callable[[str], Any], env_name: str | None, provider: str) -> Result[str | None, ErrInfo]:
    """The API key named by ``env_name``, read now; ``Ok(None)`` when no key is configured.

    Args:
        read: ``resources.secret``; it raises a `RunError` for an unset variable.
        env_name: the configured ``api_key_env``.
        provider: the provider's name, for the message.
    """
    if env_name is None:
        return Ok(None)
    try:
        value = read(env_name)
    except RunError:
        return Err(
            ErrInfo(
                ErrCode.AUTH,
                f"{provider}: the API key variable {env_name} is not set; export it, "
                f"or set api_key_env to the variable that holds the key",
                {"provider": provider, "env": env_name},
            )
        )
    secret = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    if not secret:
        return Err(
            ErrInfo(
                ErrCode.AUTH,
                f"{provider}: the API key variable {env_name} is empty",
                {"provider": provider, "env": env_name},
            )
        )
    return Ok(secret)


def join_url(base_url: str, path: str) -> str:
    """``base_url`` and ``path`` joined with exactly one slash."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def check_vectors(
    vectors: object, *, count: int, dim: int, provider: str, secrets: Sequence[str] = ()
) -> Result[list[list[float]], ErrInfo]:
    """``vectors`` if it is a list of ``count`` numeric rows of length ``dim``, else ``SERVICE_SPECIFIC``."""
    if not isinstance(vectors, list):
        return Err(malformed(provider, f"expected a list of embeddings, got {type(vectors).__name__}", secrets=secrets))
    if len(vectors) != count:
        return Err(
            malformed(
                provider,
                f"expected {count} embeddings, got {len(vectors)}",
                secrets=secrets,
                expected=count,
                got=len(vectors),
            )
        )
    for i, row in enumerate(vectors):
        if not isinstance(row, list) or len(row) != dim:
            got = len(row) if isinstance(row, list) else type(row).__name__
            return Err(
                malformed(
                    provider,
                    f"embedding {i} has dimension {got}, expected {dim}",
                    secrets=secrets,
                    expected_dim=dim,
                    got_dim=got,
                )
            )
        try:
            # array() checks every element is a number, in C.
            array("d", row)
        except TypeError:
            return Err(malformed(provider, f"embedding {i} holds a value that is not a number", secrets=secrets))
    return Ok(vectors)


EmbedCall = Callable[[list[str]], Awaitable[Result[list[list[float]], ErrInfo]]]


async def embed_in_batches(
    texts: Sequence[str], max_batch: int, call: EmbedCall
) -> Result[list[Result[Embedding, ErrInfo]], ErrInfo]:
    """Embed ``texts`` in sequential requests of at most ``max_batch``; one result per text.

    An empty text is ``BAD_INPUT`` on its own (the APIs reject the whole request
    for it) and is not sent. The first failed request fails the whole call, so
    a retry repeats one unit rather than leaving a half-embedded batch; the
    requests go one after another because concurrency belongs to the policy.
    """
    results: list[Result[Embedding, ErrInfo]] = [
        Err(ErrInfo(ErrCode.BAD_INPUT, "an empty text cannot be embedded", {"index": i})) for i, _ in enumerate(texts)
    ]
    todo = [i for i, text in enumerate(texts) if text]
    for start in range(0, len(todo), max_batch):
        indices = todo[start : start + max_batch]
        got = await call([texts[i] for i in indices])
        if isinstance(got, Err):
            return got
        for i, vector in zip(indices, got.value, strict=True):
            results[i] = Ok(vector)
    return Ok(results)


def unknown_dimension(kind: str, model: str) -> SpecError:
    """The error for an embedder whose dimension is neither configured nor known."""
    return SpecError(
        f"{kind} embedding model {model!r} has no known dimension",
        path="dimensions",
        hint=f"set `dimensions:` on the {kind} adapter to the size of the model's vectors",
    )


class HTTPSettings(Protocol):
    """The connection fields every HTTP adapter config has."""

    @property
    def base_url(self) -> str:
        """Base URL of the API."""
        ...

    @property
    def api_key_env(self) -> str | None:
        """Name of the variable holding the API key."""
        ...

    @property
    def headers(self) -> dict[str, str]:
        """Extra request headers."""
        ...

    @property
    def request_timeout(self) -> float:
        """Seconds one request may take."""
        ...


class HTTPAdapter:
    """Base of the HTTP adapters: authenticated JSON POSTs to one provider.

    Subclasses name the ``provider``, how the key is sent (`auth_headers`), any
    fixed headers, and provider-specific statuses.
    """

    provider: ClassVar[str] = "http"
    status_codes: ClassVar[Mapping[int, str]] = {}

    def __init__(self, settings: HTTPSettings, resources: Resources) -> None:
        self._settings = settings
        self._resources = resources

    def auth_headers(self, key: str) -> dict[str, str]:
        """The headers carrying ``key``; bearer authentication unless overridden."""
        return {"Authorization": f"Bearer {key}"}

    def fixed_headers(self) -> dict[str, str]:
        """Headers every request carries (versions, content type...)."""
        return {}

    async def post(self, path: str, body: Mapping[str, object]) -> Result[Any, ErrInfo]:
        """POST ``body`` to ``path`` under the base URL with auth; the decoded JSON answer."""
        s = self._settings
        key = read_secret(self._resources.secret, s.api_key_env, self.provider)
        if isinstance(key, Err):
            return key
        secrets = [key.value] if key.value else []
        url = join_url(s.base_url, path)
        # Validation refuses such a spec already; this guards configs made any other way.
        host = insecure_key_transport(url) if key.value and not getattr(s, "allow_insecure_http", False) else None
        if host is not None:
            return Err(
                error(
                    ErrCode.SERVICE_SPECIFIC,
                    f"{self.provider}: refusing to send the API key ({s.api_key_env}) in clear over plain http:// "
                    f"to {host}, which is not a loopback address; use https://, or set allow_insecure_http: true "
                    "on the adapter for a trusted network",
                    secrets,
                    provider=self.provider,
                    host=host,
                )
            )
        headers = {**s.headers, **self.fixed_headers()}
        if key.value:
            headers.update(self.auth_headers(key.value))
        try:
            client = await self._resources.http_client()
        except RunError as exc:
            return Err(error(ErrCode.NETWORK, f"{self.provider}: no HTTP client: {exc}", secrets))
        return await post_json(
            client,
            url,
            body,
            headers=headers,
            request_timeout=s.request_timeout,
            provider=self.provider,
            secrets=secrets,
            status_codes=self.status_codes,
        )


class HTTPEmbedder(HTTPAdapter, ABC):
    """An `EmbedPort` over HTTP: the fingerprint, and texts split into requests of ``max_batch``.

    Subclasses send one request (`_embed`). The dimension is known from the
    config or the model; when it is not, reading ``fingerprint`` raises a
    `funcpipe.errors.SpecError` asking for ``dimensions:``, and embedding
    fails with ``SERVICE_SPECIFIC`` (chat-only use never needs it).
    """

    def __init__(
        self, settings: HTTPSettings, resources: Resources, *, model: str, dim: int | None, max_batch: int
    ) -> None:
        super().__init__(settings, resources)
        self._model = model
        self._dim = dim
        self._max_batch = max_batch

    @property
    def fingerprint(self) -> Fingerprint:
        """The provider, the model and its dimension."""
        if self._dim is None:
            raise unknown_dimension(self.provider, self._model)
        return Fingerprint(self.provider, self._model, self._dim)

    @property
    def max_batch(self) -> int:
        """Texts per request at most."""
        return self._max_batch

    def embed_batch(
        self, texts: Sequence[str], purpose: Purpose = "document"
    ) -> AsyncPlan[list[Result[Embedding, ErrInfo]]]:
        """Embed ``texts``, one request per ``max_batch`` of them."""
        batch = list(texts)

        async def one(sub: list[str]) -> Result[list[list[float]], ErrInfo]:
            if self._dim is None:
                return Err(ErrInfo(ErrCode.SERVICE_SPECIFIC, unknown_dimension(self.provider, self._model).message))
            return await self._embed(sub, purpose, self._dim)

        async def run() -> Result[list[Result[Embedding, ErrInfo]], ErrInfo]:
            return await embed_in_batches(batch, self._max_batch, one)

        return run

    @abstractmethod
    async def _embed(self, texts: list[str], purpose: Purpose, dim: int) -> Result[list[list[float]], ErrInfo]:
        """Send one request for ``texts``; the vectors, checked to have dimension ``dim``."""
