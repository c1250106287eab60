"""The shared HTTP error taxonomy, retry hints, redaction and batching of funcpipe.adapters.http."""

from __future__ import annotations

import socket
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from funcpipe.adapters.http import (
    REDACTED,
    check_vectors,
    embed_in_batches,
    exception_error,
    malformed,
    parse_go_duration,
    parse_retry_after,
    post_json,
    provider_error,
    read_secret,
    redact,
    response_error,
    status_code_to_err,
)
from funcpipe.core import Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.errors import ResourceError
from tests.fakes import Fault, OpenAIServer

URL = "http://127.0.0.1:9/v1/embeddings"
DATE = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def _response(
    status: int, *, json: object = None, text: str | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    request = httpx.Request("POST", URL + "?token=abc")
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    return httpx.Response(status, json=json, headers=headers, request=request)


@pytest.fixture(scope="module")
def shared_server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=None, dim=8) as s:
        yield s


@pytest.fixture
def server(shared_server: OpenAIServer) -> OpenAIServer:
    shared_server.reset()
    return shared_server


# -- statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, ErrCode.AUTH),
        (403, ErrCode.AUTH),
        (429, ErrCode.RATE_LIMIT),
        (408, ErrCode.TRANSIENT),
        (409, ErrCode.TRANSIENT),
        (500, ErrCode.TRANSIENT),
        (502, ErrCode.TRANSIENT),
        (503, ErrCode.TRANSIENT),
        (529, ErrCode.TRANSIENT),
        (400, ErrCode.SERVICE_SPECIFIC),
        (404, ErrCode.SERVICE_SPECIFIC),
        (422, ErrCode.SERVICE_SPECIFIC),
        (302, ErrCode.SERVICE_SPECIFIC),
    ],
)
def test_status_maps_to_its_code(status: int, code: str) -> None:
    assert status_code_to_err(status) == code


def test_provider_overrides_win_over_the_default_mapping() -> None:
    assert status_code_to_err(498, {498: ErrCode.AUTH}) == ErrCode.AUTH


# -- Go durations and retry hints ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0s", 0.0), ("250us", 0.00025)],
)
def test_go_duration_is_parsed(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "1s junk", "-1s"])
def test_go_duration_rejects_other_text(text: str) -> None:
    assert parse_go_duration(text) is None


@settings(max_examples=60, derandomize=True)
@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_go_duration_sums_its_parts(h: int, m: int, s: int, ms: int) -> None:
    text = f"{h}h{m}m{s}s{ms}ms"
    assert parse_go_duration(text) == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)


def test_retry_after_in_seconds() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0


def test_retry_after_as_http_date_is_relative_to_the_servers_date_header() -> None:
    headers = {
        "date": format_datetime(DATE, usegmt=True),
        "retry-after": format_datetime(DATE + timedelta(seconds=30), usegmt=True),
    }
    assert parse_retry_after(headers, now=lambda: 0.0) == 30.0


def test_retry_after_as_http_date_without_date_header_uses_now() -> None:
    headers = {"retry-after": format_datetime(DATE + timedelta(seconds=12), usegmt=True)}
    assert parse_retry_after(headers, now=DATE.timestamp) == 12.0


def test_retry_after_ms_is_preferred_for_its_precision() -> None:
    assert parse_retry_after({"retry-after": "1", "retry-after-ms": "250"}) == 0.25


def test_retry_after_in_the_past_is_zero() -> None:
    headers = {
        "date": format_datetime(DATE, usegmt=True),
        "retry-after": format_datetime(DATE - timedelta(seconds=5), usegmt=True),
    }
    assert parse_retry_after(headers) == 0.0


def test_unparsable_retry_after_is_unknown() -> None:
    assert parse_retry_after({"retry-after": "soon"}) is None


def test_no_hint_is_unknown() -> None:
    assert parse_retry_after({}) is None


def test_openai_reset_of_the_exhausted_limit_is_used() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "9000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert parse_retry_after(headers) == 1.0


def test_openai_resets_without_remaining_counts_take_the_longest() -> None:
    headers = {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "2s"}
    assert parse_retry_after(headers) == 2.0


def test_anthropic_reset_time_is_relative_to_the_servers_date() -> None:
    headers = {
        "date": format_datetime(DATE, usegmt=True),
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": (DATE + timedelta(seconds=8)).isoformat().replace("+00:00", "Z"),
    }
    assert parse_retry_after(headers) == 8.0


# -- provider messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}},
            ("bad key", "invalid_api_key"),
        ),
        (
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            ("Overloaded", "overloaded_error"),
        ),
        ({"id": "x", "message": "invalid api token"}, ("invalid api token", None)),
        ({"error": "model not found"}, ("model not found", None)),
        ({"detail": "nope"}, ("nope", None)),
        (["not", "a", "mapping"], (None, None)),
    ],
    ids=["openai", "anthropic", "cohere", "ollama", "detail", "other"],
)
def test_provider_error_reads_every_known_shape(payload: object, expected: tuple[str | None, str | None]) -> None:
    assert provider_error(payload) == expected


def test_response_error_keeps_status_message_and_request_id() -> None:
    response = _response(
        429,
        json={"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}},
        headers={"retry-after": "3", "x-request-id": "req_1"},
    )
    err = response_error(response, provider="openai")
    assert (
        err.code,
        err.meta["status"],
        err.meta["provider_message"],
        err.meta["retry_after"],
        err.meta["request_id"],
    ) == (
        ErrCode.RATE_LIMIT,
        429,
        "slow down",
        3.0,
        "req_1",
    )


def test_response_error_drops_the_query_string_from_the_endpoint() -> None:
    err = response_error(_response(500, json={}), provider="openai")
    assert err.meta["endpoint"] == URL


def test_response_error_of_a_non_json_body_keeps_an_excerpt() -> None:
    err = response_error(_response(502, text="<html>Bad gateway</html>"), provider="openai")
    assert (err.code, err.meta["provider_message"]) == (ErrCode.TRANSIENT, "<html>Bad gateway</html>")


def test_response_error_redacts_a_secret_echoed_by_the_provider() -> None:
    secret = "sk-canary-0123456789abcdef"
    err = response_error(
        _response(401, json={"error": {"message": f"Incorrect API key provided: {secret}"}}),
        provider="openai",
        secrets=[secret],
    )
    assert secret not in err.msg and secret not in str(err.meta["provider_message"])


def test_response_error_applies_provider_status_overrides() -> None:
    err = response_error(
        _response(498, json={"message": "invalid token"}), provider="cohere", status_codes={498: ErrCode.AUTH}
    )
    assert err.code == ErrCode.AUTH


# -- exceptions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ConnectTimeout("t"), ErrCode.TIMEOUT),
        (httpx.ReadTimeout("t"), ErrCode.TIMEOUT),
        (httpx.WriteTimeout("t"), ErrCode.TIMEOUT),
        (httpx.PoolTimeout("t"), ErrCode.TIMEOUT),
        (httpx.ConnectError("refused"), ErrCode.NETWORK),
        (httpx.ReadError("reset"), ErrCode.NETWORK),
        (httpx.WriteError("broken pipe"), ErrCode.NETWORK),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), ErrCode.NETWORK),
        (ConnectionResetError("reset"), ErrCode.NETWORK),
        (httpx.UnsupportedProtocol("ftp"), ErrCode.SERVICE_SPECIFIC),
        (httpx.DecodingError("gzip"), ErrCode.SERVICE_SPECIFIC),
        (httpx.InvalidURL("bad"), ErrCode.SERVICE_SPECIFIC),
        (httpx.LocalProtocolError("bad header"), ErrCode.SERVICE_SPECIFIC),
        (httpx.ProxyError("proxy down"), ErrCode.NETWORK),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v,
)
def test_exception_maps_to_its_code(exc: Exception, code: str) -> None:
    assert exception_error(exc, provider="openai", url=URL).code == code


def test_exception_error_names_the_exception() -> None:
    err = exception_error(httpx.ReadTimeout("read timed out"), provider="ollama", url=URL)
    assert (err.meta["exception"], "ReadTimeout" in err.msg, err.meta["endpoint"]) == ("ReadTimeout", True, URL)


# -- redaction -----------------------------------------------------------------------------


def test_redact_hides_bearer_tokens() -> None:
    assert redact("sent Authorization: Bearer abc.def-ghi") == f"sent Authorization: {REDACTED}"


def test_redact_hides_provider_key_shapes() -> None:
    assert redact("key sk-proj-ABCDEFGH1234 and sk-ant-api03-xyzxyzxyz") == f"key {REDACTED} and {REDACTED}"


def test_redact_hides_api_key_assignments() -> None:
    assert redact("x-api-key: hunter2hunter2") == f"x-api-key: {REDACTED}"


def test_redact_hides_a_bearer_token_in_prose() -> None:
    assert redact("the proxy saw bearer eyJhbGciOi.payload.sig") == f"the proxy saw bearer {REDACTED}"


def test_redact_keeps_prose_about_auth_schemes() -> None:
    text = "use Bearer auth; this is a basic error"
    assert redact(text) == text


def test_redact_leaves_plain_text_alone() -> None:
    text = "Rate limit reached for requests. Please try again in 20ms."
    assert redact(text, ["canary-secret-value"]) == text


@settings(max_examples=80, derandomize=True)
@given(
    # Keys are made of these; none occurs in the "[REDACTED]" marker, so a
    # replacement cannot itself spell the secret.
    secret=st.text(string.ascii_lowercase + string.digits + "-_.", min_size=6, max_size=40),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_redact_never_lets_a_secret_through(secret: str, before: str, after: str) -> None:
    assert secret not in redact(before + secret + after + secret, [secret])


_KEY = st.text(string.ascii_lowercase + string.digits + "_", min_size=8, max_size=40)


def _pieces_shown(secret: str, shown: list[str], baseline: list[str]) -> set[str]:
    """The 4-character pieces of ``secret`` in ``shown`` that funcpipe's own words (``baseline``) lack."""
    pieces = {secret[i : i + 4] for i in range(len(secret) - 3)}
    return {p for p in pieces if any(p in text for text in shown) and not any(p in text for text in baseline)}


def _strings(err: ErrInfo) -> list[str]:
    return [err.msg, *(v for v in err.meta.values() if isinstance(v, str))]


@settings(max_examples=100, derandomize=True)
@given(secret=_KEY, position=st.integers(min_value=0, max_value=600), as_json=st.booleans())
def test_no_piece_of_a_secret_survives_the_excerpt_wherever_it_falls(secret: str, position: int, as_json: bool) -> None:
    # The body is cut to an excerpt; redacting after the cut would let the
    # first half of a key straddling it through. The filler has no key character.
    def err_for(middle: str) -> ErrInfo:
        body = "# " * (position // 2) + middle + " #" * 400
        response = _response(500, json={"error": {"message": body}}) if as_json else _response(500, text=body)
        return response_error(response, provider="openai", secrets=[secret])

    assert _pieces_shown(secret, _strings(err_for(secret)), _strings(err_for(REDACTED))) == set()


@settings(max_examples=50, derandomize=True)
@given(secret=_KEY, position=st.integers(min_value=0, max_value=600))
def test_no_piece_of_a_secret_survives_a_malformed_body_excerpt(secret: str, position: int) -> None:
    def err_for(middle: str) -> ErrInfo:
        return malformed("openai", "bad", secrets=[secret], body="# " * (position // 2) + middle + " #" * 400)

    assert _pieces_shown(secret, _strings(err_for(secret)), _strings(err_for(REDACTED))) == set()


# -- secrets -------------------------------------------------------------------------------


def _env(values: dict[str, str]):  # type: ignore[no-untyped-def]
    def read(name: str) -> SecretStr:
        if name not in values:
            raise ResourceError(f"environment variable {name} is not set")
        return SecretStr(values[name])

    return read


def test_unset_key_variable_is_auth_naming_the_variable() -> None:
    got = read_secret(_env({}), "MY_KEY", "openai")
    assert isinstance(got, Err) and got.error.code == ErrCode.AUTH and "MY_KEY" in got.error.msg


def test_empty_key_variable_is_auth() -> None:
    got = read_secret(_env({"MY_KEY": ""}), "MY_KEY", "openai")
    assert isinstance(got, Err) and got.error.code == ErrCode.AUTH


def test_no_key_configured_reads_nothing() -> None:
    assert read_secret(_env({}), None, "ollama") == Ok(None)


def test_key_is_read_from_its_variable() -> None:
    assert read_secret(_env({"MY_KEY": "value-123"}), "MY_KEY", "openai") == Ok("value-123")


# -- vectors and batching ------------------------------------------------------------------


def test_check_vectors_accepts_rows_of_the_dimension() -> None:
    assert check_vectors([[0.0, 1], [2.5, 3.0]], count=2, dim=2, provider="p") == Ok([[0.0, 1], [2.5, 3.0]])


@pytest.mark.parametrize(
    "vectors",
    [[[0.0, 1.0]], [[0.0, 1.0], [1.0]], [[0.0, 1.0], "x"], [[0.0, "1"], [0.0, 1.0]], {"a": 1}],
    ids=["count", "dimension", "row-type", "element-type", "not-a-list"],
)
def test_check_vectors_rejects_what_is_wrong(vectors: object) -> None:
    got = check_vectors(vectors, count=2, dim=2, provider="p")
    assert isinstance(got, Err) and got.error.code == ErrCode.SERVICE_SPECIFIC


@settings(max_examples=60, derandomize=True)
@given(texts=st.lists(st.text(max_size=3), max_size=30), max_batch=st.integers(1, 8))
async def test_batches_cover_non_empty_texts_in_order_within_max_batch(texts: list[str], max_batch: int) -> None:
    calls: list[list[str]] = []

    async def call(sub: list[str]) -> Result[list[list[float]], ErrInfo]:
        calls.append(sub)
        return Ok([[float(len(t))] for t in sub])

    got = await embed_in_batches(texts, max_batch, call)
    assert isinstance(got, Ok)
    assert [t for c in calls for t in c] == [t for t in texts if t]
    assert all(0 < len(c) <= max_batch for c in calls)
    assert [r.value if isinstance(r, Ok) else r.error.code for r in got.value] == [
        [float(len(t))] if t else ErrCode.BAD_INPUT for t in texts
    ]


async def test_a_failed_request_fails_the_whole_call() -> None:
    failure = ErrInfo(ErrCode.TRANSIENT, "boom")
    calls = 0

    async def call(sub: list[str]) -> Result[list[list[float]], ErrInfo]:
        nonlocal calls
        calls += 1
        return Err(failure) if calls == 2 else Ok([[1.0] for _ in sub])

    assert await embed_in_batches(["a", "b", "c"], 1, call) == Err(failure)
    assert calls == 2


# -- post_json over real sockets -----------------------------------------------------------


async def test_post_json_returns_the_decoded_answer(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    got = await post_json(
        client,
        server.url + "/embeddings",
        {"model": "m", "input": ["a"]},
        headers={},
        request_timeout=5,
        provider="openai",
    )
    assert isinstance(got, Ok) and got.value["object"] == "list"


async def test_refused_connection_is_network(client: httpx.AsyncClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    got = await post_json(client, f"http://127.0.0.1:{port}/x", {}, headers={}, request_timeout=5, provider="p")
    assert isinstance(got, Err) and got.error.code == ErrCode.NETWORK


async def test_slow_answer_is_timeout(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.slow(5.0))
    got = await post_json(
        client,
        server.url + "/embeddings",
        {"model": "m", "input": ["a"]},
        headers={},
        request_timeout=0.2,
        provider="openai",
    )
    assert isinstance(got, Err) and got.error.code == ErrCode.TIMEOUT


async def test_non_json_success_is_service_specific_with_an_excerpt(
    server: OpenAIServer, client: httpx.AsyncClient
) -> None:
    server.script(Fault.malformed())
    got = await post_json(
        client,
        server.url + "/embeddings",
        {"model": "m", "input": ["a"]},
        headers={},
        request_timeout=5,
        provider="openai",
    )
    assert isinstance(got, Err) and got.error.code == ErrCode.SERVICE_SPECIFIC and got.error.meta["status"] == 200
    assert str(got.error.meta["body_excerpt"]).startswith('{"object"')


async def test_a_url_without_scheme_is_service_specific(client: httpx.AsyncClient) -> None:
    got = await post_json(client, "127.0.0.1:8080/x", {}, headers={}, request_timeout=5, provider="p")
    assert isinstance(got, Err) and got.error.code == ErrCode.SERVICE_SPECIFIC
