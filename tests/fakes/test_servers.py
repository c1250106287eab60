"""The fake servers themselves: faithful refusals, scripted and random faults, throttling, lifecycle."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes import AnthropicServer, Fault, OpenAIServer

KEY = "sk-test-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "m", "input": ["a fox"]}


@pytest.fixture(scope="module")
def shared_server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY, dim=8) as s:
        yield s


@pytest.fixture
def server(shared_server: OpenAIServer) -> OpenAIServer:
    shared_server.reset()
    return shared_server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def _statuses(server: OpenAIServer, client: httpx.Client, n: int) -> list[int]:
    return [client.post(server.url + "/embeddings", json=BODY, headers=AUTH).status_code for _ in range(n)]


def test_unknown_request_fields_are_refused_like_openai(server: OpenAIServer, client: httpx.Client) -> None:
    response = client.post(server.url + "/embeddings", json={**BODY, "purpose": "query"}, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Unrecognized request argument supplied: purpose"


def test_an_empty_input_string_is_refused_like_openai(server: OpenAIServer, client: httpx.Client) -> None:
    response = client.post(server.url + "/embeddings", json={"model": "m", "input": ["a", ""]}, headers=AUTH)
    assert (response.status_code, response.json()["error"]["type"]) == (400, "invalid_request_error")


def test_a_request_without_key_is_refused_with_openais_shape(server: OpenAIServer, client: httpx.Client) -> None:
    response = client.post(server.url + "/embeddings", json=BODY)
    assert response.status_code == 401 and set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_scripted_faults_come_in_order_then_normal_answers(server: OpenAIServer, client: httpx.Client) -> None:
    server.script(Fault.rate_limit("3"), Fault.server_error(503))
    assert _statuses(server, client, 3) == [429, 503, 200]


def test_a_scripted_429_carries_retry_after(server: OpenAIServer, client: httpx.Client) -> None:
    server.script(Fault.rate_limit("3"))
    assert client.post(server.url + "/embeddings", json=BODY, headers=AUTH).headers["retry-after"] == "3"


def test_random_faults_are_reproducible_from_the_seed(client: httpx.Client) -> None:
    runs = []
    for _ in range(2):
        with OpenAIServer(api_key=KEY, dim=8) as server:
            server.random_faults(0.5, [Fault.server_error(), Fault.rate_limit()], seed=42)
            runs.append(_statuses(server, client, 20))
    assert runs[0] == runs[1] and set(runs[0]) == {200, 429, 500}


def test_random_fault_rate_one_faults_every_request(server: OpenAIServer, client: httpx.Client) -> None:
    server.random_faults(1.0, [Fault.server_error(502)], seed=0)
    assert _statuses(server, client, 5) == [502] * 5


def test_throttling_answers_429_with_whole_and_millisecond_hints(server: OpenAIServer, client: httpx.Client) -> None:
    server.throttle(rate=1)
    first = client.post(server.url + "/embeddings", json=BODY, headers=AUTH)
    second = client.post(server.url + "/embeddings", json=BODY, headers=AUTH)
    assert (first.status_code, second.status_code, second.headers["retry-after"]) == (200, 429, "1")
    assert 0 < int(second.headers["retry-after-ms"]) <= 1000


def test_requests_and_statuses_are_counted(server: OpenAIServer, client: httpx.Client) -> None:
    server.script(Fault.server_error())
    _statuses(server, client, 3)
    assert (server.count("/embeddings"), server.statuses[200], server.statuses[500], server.faults_injected["500"]) == (
        3,
        2,
        1,
        1,
    )


def test_reset_forgets_requests_and_faults(server: OpenAIServer, client: httpx.Client) -> None:
    server.script(Fault.server_error())
    _statuses(server, client, 1)
    server.script(Fault.server_error())
    server.reset()
    assert (server.count(), _statuses(server, client, 1)) == (0, [200])


def test_a_dropped_connection_has_no_answer(server: OpenAIServer, client: httpx.Client) -> None:
    server.script(Fault.drop())
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(server.url + "/embeddings", json=BODY, headers=AUTH)


def test_a_reset_connection_is_a_read_error(server: OpenAIServer, client: httpx.Client) -> None:
    server.script(Fault.reset())
    with pytest.raises(httpx.ReadError):
        client.post(server.url + "/embeddings", json=BODY, headers=AUTH)


def test_stop_cuts_a_slow_answer_short() -> None:
    server = OpenAIServer(api_key=KEY, dim=8).start()
    server.script(Fault.slow(30.0))
    caller = threading.Thread(
        target=lambda: httpx.post(server.url + "/embeddings", json=BODY, headers=AUTH, timeout=30), daemon=True
    )
    caller.start()
    deadline = time.monotonic() + 5
    while server.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    started = time.monotonic()
    server.stop()
    caller.join(timeout=5)
    assert time.monotonic() - started < 2 and not caller.is_alive()


def test_anthropic_requires_its_version_header() -> None:
    with AnthropicServer(api_key=KEY) as server:
        response = httpx.post(
            server.url + "/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": KEY},
        )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }


def test_anthropic_does_not_take_a_bearer_token() -> None:
    with AnthropicServer(api_key=KEY) as server:
        response = httpx.post(
            server.url + "/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            headers={**AUTH, "anthropic-version": "2023-06-01"},
        )
    assert (response.status_code, response.json()["error"]["type"]) == (401, "authentication_error")
