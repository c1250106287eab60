"""Faithful local stand-ins for the provider APIs, on real sockets.

Each server listens on 127.0.0.1 at an ephemeral port in a background thread
and behaves like the real API where it matters to an adapter: the path, the
auth header and the body the real API requires are checked, and answers and
errors have the real shapes. Faults are scriptable:

    with OpenAIServer(api_key="k", dim=64) as server:
        server.script(Fault.rate_limit(retry_after="2"), Fault.drop())
        server.random_faults(0.3, [Fault.server_error(), Fault.reset()], seed=1)
        server.throttle(rate=20)          # 429 + Retry-After beyond 20 requests/s
        ... server.url ... server.requests ... server.count("/v1/embeddings")

Order for each request: record it, wait ``latency``, throttle, take the next
fault (scripted first, then random), then answer as the real API would. The
embedding servers compute vectors with the ``hashing`` embedder, so results
are meaningful and comparable with it.
"""

from __future__ import annotations

import base64
import json
import math
import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal, Self

from funcpipe.adapters.config import HashingConfig
from funcpipe.adapters.hashing import HashingEmbedder

EmbedFn = Callable[[str, int], list[float]]
"""``(text, dim) -> vector``: how an embedding server computes its answers."""

ReplyFn = Callable[[str], str]
"""``prompt -> text``: how a chat server answers."""

FaultKind = Literal["http", "slow", "drop", "reset", "malformed", "shape", "wrong_dim", "wrong_count"]


def hashing_embed(text: str, dim: int) -> list[float]:
    """The ``hashing`` adapter's vector of ``text`` at dimension ``dim`` (its default settings)."""
    return _hashing(dim).embed_text(text)


_EMBEDDERS: dict[int, HashingEmbedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def _hashing(dim: int) -> HashingEmbedder:
    with _EMBEDDERS_LOCK:
        if dim not in _EMBEDDERS:
            _EMBEDDERS[dim] = HashingEmbedder(HashingConfig(dim=dim))
        return _EMBEDDERS[dim]


def echo_reply(prompt: str) -> str:
    """A deterministic answer: the prompt's first line, quoted."""
    first = prompt.strip().splitlines()[0] if prompt.strip() else ""
    return f"You asked: {first}"


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour.

    Attributes:
        kind: ``http`` (an error status in the provider's shape), ``slow`` (a
            delay, then a normal answer), ``drop`` (close without answering),
            ``reset`` (TCP RST), ``malformed`` (200 with broken JSON),
            ``shape`` (200 with valid JSON missing the expected field),
            ``wrong_dim`` and ``wrong_count`` (embedding servers).
        status: the status of an ``http`` fault.
        message: the provider message of an ``http`` fault (a default per status).
        headers: extra response headers (Retry-After...).
        delay: seconds a ``slow`` fault waits.
    """

    kind: FaultKind
    status: int = 500
    message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def http(cls, status: int, message: str | None = None, **headers: str) -> Fault:
        """An error status; header names are given with ``_`` for ``-``."""
        return cls("http", status, message, {k.replace("_", "-"): v for k, v in headers.items()})

    @classmethod
    def auth(cls) -> Fault:
        """401."""
        return cls.http(401)

    @classmethod
    def forbidden(cls) -> Fault:
        """403."""
        return cls.http(403)

    @classmethod
    def rate_limit(cls, retry_after: str | None = "1", **headers: str) -> Fault:
        """429, with ``Retry-After`` unless ``retry_after`` is None."""
        if retry_after is not None:
            headers["retry_after"] = retry_after
        return cls.http(429, **headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """A 5xx."""
        return cls.http(status)

    @classmethod
    def bad_request(cls) -> Fault:
        """400."""
        return cls.http(400)

    @classmethod
    def slow(cls, delay: float) -> Fault:
        """Answer normally after ``delay`` seconds."""
        return cls("slow", delay=delay)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without an answer."""
        return cls("drop")

    @classmethod
    def reset(cls) -> Fault:
        """Reset the connection (TCP RST)."""
        return cls("reset")

    @classmethod
    def malformed(cls) -> Fault:
        """200 with a body that is not JSON."""
        return cls("malformed")

    @classmethod
    def shape(cls) -> Fault:
        """200 with JSON whose expected field is renamed."""
        return cls("shape")

    @classmethod
    def wrong_dim(cls) -> Fault:
        """Embeddings one coordinate too long."""
        return cls("wrong_dim")

    @classmethod
    def wrong_count(cls) -> Fault:
        """One embedding fewer than texts."""
        return cls("wrong_count")


FAULT_CODES: tuple[tuple[str, Fault, str], ...] = (
    ("401", Fault.auth(), "AUTH"),
    ("403", Fault.forbidden(), "AUTH"),
    ("429", Fault.rate_limit("2"), "RATE_LIMIT"),
    ("408", Fault.http(408), "TRANSIENT"),
    ("500", Fault.server_error(), "TRANSIENT"),
    ("503", Fault.server_error(503), "TRANSIENT"),
    ("400", Fault.bad_request(), "SERVICE_SPECIFIC"),
    ("404", Fault.http(404), "SERVICE_SPECIFIC"),
    ("drop", Fault.drop(), "NETWORK"),
    ("reset", Fault.reset(), "NETWORK"),
    ("malformed", Fault.malformed(), "SERVICE_SPECIFIC"),
    ("shape", Fault.shape(), "SERVICE_SPECIFIC"),
)
"""Every fault any server can inject, named, with the error code an adapter must map it to."""

EMBED_FAULT_CODES: tuple[tuple[str, Fault, str], ...] = (
    *FAULT_CODES,
    ("wrong_dim", Fault.wrong_dim(), "SERVICE_SPECIFIC"),
    ("wrong_count", Fault.wrong_count(), "SERVICE_SPECIFIC"),
)
"""`FAULT_CODES` plus the faults only embedding servers can inject."""


@dataclass(frozen=True)
class Recorded:
    """A request as the server received it; header names are lower-case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """What the server does: answer, or drop or reset the connection."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    action: Literal["answer", "drop", "reset"] = "answer"
    content_type: str = "application/json"


def json_reply(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON answer."""
    return Reply(status, json.dumps(payload).encode("utf-8"), dict(headers or {}))


class _Bucket:
    """A token bucket: ``rate`` per second, at most ``burst`` saved."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()

    def take(self) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class BadRequest(Exception):
    """Raised by a route to answer 400 (or ``status``) in the provider's shape."""

    def __init__(self, message: str, status: int = 400, error_type: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type


class FakeServer:
    """Base of the provider servers: sockets, recording, latency, throttling and faults.

    Args:
        api_key: the key the server accepts; None accepts requests without one.
        latency: seconds every request waits before it is answered.
        prefix: path prefix of the API (``/v1`` for OpenAI), part of `url`.
    """

    provider: ClassVar[str] = "fake"

    def __init__(self, *, api_key: str | None = "test-key", latency: float = 0.0, prefix: str = "") -> None:
        self.api_key = api_key
        self.latency = latency
        self.prefix = prefix.rstrip("/")
        self.requests: list[Recorded] = []
        self.statuses: Counter[int] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self._faults: deque[Fault] = deque()
        self._random: tuple[float, Sequence[Fault], random.Random] | None = None
        self._bucket: _Bucket | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = 0

    # -- lifecycle -------------------------------------------------------

    def start(self) -> Self:
        """Listen on 127.0.0.1 at a free port and serve in a daemon thread."""
        handler = _make_handler(self)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-{self.provider}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; slow answers in progress are cut short."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port listened on."""
        assert self._server is not None, "start() the server first"
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL an adapter is configured with."""
        return self.origin + self.prefix

    # -- scripting -------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue faults for the next requests, one each, in order."""
        with self._lock:
            self._faults.extend(faults)

    def random_faults(self, rate: float, faults: Sequence[Fault], *, seed: int = 0) -> None:
        """Inject one of ``faults`` (uniformly) into each request with probability ``rate``."""
        with self._lock:
            self._random = (rate, list(faults), random.Random(seed))

    def throttle(self, rate: float, *, burst: int = 1) -> None:
        """Answer 429 with Retry-After to requests beyond ``rate`` per second."""
        with self._lock:
            self._bucket = _Bucket(rate, burst)

    def reset(self) -> None:
        """Forget requests, counts, queued and random faults and throttling (between tests)."""
        with self._lock:
            self.requests.clear()
            self.statuses.clear()
            self.faults_injected.clear()
            self._faults.clear()
            self._random = None
            self._bucket = None

    def count(self, path: str | None = None) -> int:
        """Requests received, all or to ``path`` (without the prefix)."""
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.path == self.prefix + path)

    def bodies(self, path: str | None = None) -> list[Any]:
        """The JSON bodies received, all or to ``path`` (without the prefix)."""
        with self._lock:
            return [r.json() for r in self.requests if path is None or r.path == self.prefix + path]

    # -- serving ---------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        """A deterministic id: ``<prefix>_000001``."""
        with self._lock:
            self._ids += 1
            return f"{prefix}_{self._ids:06d}"

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _take_fault(self) -> Fault | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self._random is not None:
                rate, faults, rng = self._random
                if rng.random() < rate:
                    return rng.choice(faults)
        return None

    def _throttled(self) -> float:
        with self._lock:
            return self._bucket.take() if self._bucket is not None else 0.0

    def handle(self, request: Recorded) -> Reply:
        """Answer one request (called on the server's threads)."""
        with self._lock:
            self.requests.append(request)
        self._sleep(self.latency)
        wait = self._throttled()
        if wait > 0:
            reply = self.throttled_reply(wait)
        else:
            fault = self._take_fault()
            if fault is not None:
                with self._lock:
                    self.faults_injected[fault.kind if fault.kind != "http" else str(fault.status)] += 1
            reply = self._answer(request, fault)
        with self._lock:
            self.statuses[reply.status if reply.action == "answer" else -1] += 1
        return reply

    def _answer(self, request: Recorded, fault: Fault | None) -> Reply:
        if fault is not None:
            if fault.kind == "http":
                return self.error_reply(fault.status, fault.message, headers=fault.headers)
            if fault.kind in ("drop", "reset"):
                return Reply(action=fault.kind)
            if fault.kind == "slow":
                self._sleep(fault.delay)
                fault = None
            if fault is not None and fault.kind == "malformed":
                return Reply(200, b'{"object": "list", "data": [{"index": 0, "embedd')
        route = self.routes().get((request.method, request.path.split("?", 1)[0]))
        if route is None:
            return self.not_found(request)
        auth = self.check_auth(request)
        if auth is not None:
            return auth
        try:
            return route(request, fault.kind if fault is not None else None)
        except BadRequest as exc:
            return self.error_reply(exc.status, exc.message, error_type=exc.error_type)

    def throttled_reply(self, wait: float) -> Reply:
        """429 in the provider's shape with ``Retry-After`` (whole seconds) and ``retry-after-ms``."""
        headers = {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))}
        return self.error_reply(429, None, headers=headers)

    # -- provider specifics (overridden) --------------------------------

    def routes(self) -> Mapping[tuple[str, str], Callable[[Recorded, str | None], Reply]]:
        """``(method, path) -> handler(request, corruption)``."""
        return {}

    def check_auth(self, request: Recorded) -> Reply | None:
        """An error reply if the request's credentials are missing or wrong."""
        if self.api_key is None:
            return None
        auth = request.headers.get("authorization")
        if auth != f"Bearer {self.api_key}":
            return self.error_reply(401, "invalid api key" if auth else "no api key")
        return None

    def not_found(self, request: Recorded) -> Reply:
        """The answer to an unknown path."""
        return self.error_reply(404, f"unknown path {request.method} {request.path}")

    def error_reply(
        self,
        status: int,
        message: str | None,
        *,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> Reply:
        """An error answer in the provider's shape."""
        return json_reply(status, {"error": message or f"error {status}"}, headers)

    def embed(self, texts: Sequence[str], dim: int, corruption: str | None) -> list[list[float]]:
        """Vectors of ``texts`` at ``dim``, corrupted on request."""
        vectors = [self.embed_fn(t, dim) for t in texts]
        if corruption == "wrong_dim":
            vectors = [[*v, 0.0] for v in vectors]
        elif corruption == "wrong_count" and vectors:
            vectors = vectors[:-1]
        return vectors

    embed_fn: EmbedFn = staticmethod(hashing_embed)


def _make_handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes; without this, Nagle's
            # algorithm and the client's delayed ACK add ~40 ms to every answer.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Recorded(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            reply = server.handle(request)
            if reply.action == "drop":
                self.close_connection = True
                return
            if reply.action == "reset":
                self.close_connection = True
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                return
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

        do_POST = _serve
        do_GET = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _require(cond: bool, message: str, error_type: str | None = None) -> None:
    if not cond:
        raise BadRequest(message, error_type=error_type)


def _json_body(request: Recorded, message: str) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        raise BadRequest(message) from None
    if not isinstance(body, dict):
        raise BadRequest(message)
    return body


def _texts(value: object, *, max_items: int, non_empty: bool, message: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not 0 < len(items) <= max_items:
        raise BadRequest(message)
    texts: list[str] = []
    for t in items:
        if not isinstance(t, str) or (non_empty and not t):
            raise BadRequest(message)
        texts.append(t)
    return texts


def _words(text: str) -> int:
    return len(text.split())


# -- OpenAI -------------------------------------------------------------------------------


class OpenAIServer(FakeServer):
    """OpenAI's ``/v1/embeddings`` and ``/v1/chat/completions``.

    Args:
        dim: the native dimension of the embedding model.
        models: the models that exist; None accepts any name.
        shuffle: answer embeddings in reverse order (each keeps its ``index``).
        echo_key: a wrong key is echoed in full in the 401 message (a leaky
            compatible server), instead of masked as OpenAI does.
        reply: how chat answers.
        embed_fn: how vectors are computed (``hashing`` by default).
        count_tokens: how the ``usage`` of embeddings counts a text's tokens
            (its words by default; a real tokenizer for usage measurements).
    """

    provider = "openai"
    _EMBED_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
    _CHAT_FIELDS = frozenset(
        {
            "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop",
            "stream", "user", "seed", "presence_penalty", "frequency_penalty", "response_format", "tools",
            "tool_choice", "logprobs", "top_logprobs", "logit_bias",
        }
    )  # fmt: skip
    _TYPES: ClassVar[Mapping[int, tuple[str, str | None, str]]] = {
        400: ("invalid_request_error", None, "Invalid request."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        403: (
            "invalid_request_error",
            "unsupported_country_region_territory",
            "Country, region, or territory not supported",
        ),
        404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
        429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
        500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
        503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    }

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        dim: int = 64,
        models: Iterable[str] | None = None,
        shuffle: bool = False,
        echo_key: bool = False,
        reply: ReplyFn = echo_reply,
        embed_fn: EmbedFn | None = None,
        latency: float = 0.0,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        super().__init__(api_key=api_key, latency=latency, prefix="/v1")
        self.dim = dim
        self.count_tokens = count_tokens or _words
        self.models = frozenset(models) if models is not None else None
        self.shuffle = shuffle
        self.echo_key = echo_key
        self.reply = reply
        if embed_fn is not None:
            self.embed_fn = embed_fn

    def routes(self) -> Mapping[tuple[str, str], Callable[[Recorded, str | None], Reply]]:
        """Embeddings and chat completions."""
        return {("POST", "/v1/embeddings"): self._embeddings, ("POST", "/v1/chat/completions"): self._chat}

    def check_auth(self, request: Recorded) -> Reply | None:
        """``Authorization: Bearer <key>``, with OpenAI's messages."""
        if self.api_key is None:
            return None
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return self.error_reply(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                error_type="",
            )
        key = auth[7:].strip()
        if key != self.api_key:
            shown = key if self.echo_key else (key[:3] + "*" * max(0, len(key) - 7) + key[-4:])
            return self.error_reply(
                401,
                f"Incorrect API key provided: {shown}. "
                "You can find your API key at https://platform.openai.com/account/api-keys.",
            )
        return None

    def error_reply(
        self,
        status: int,
        message: str | None,
        *,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> Reply:
        """``{"error": {"message", "type", "param", "code"}}``."""
        kind, code, default = self._TYPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}")
        )
        if error_type == "":
            code = None
        return json_reply(
            status,
            {"error": {"message": message or default, "type": kind, "param": None, "code": code}},
            {"x-request-id": self.next_id("req"), **(headers or {})},
        )

    def _check_model(self, body: Mapping[str, Any]) -> str:
        model = body.get("model")
        _require(isinstance(model, str) and bool(model), "you must provide a model parameter")
        assert isinstance(model, str)
        if self.models is not None and model not in self.models:
            raise BadRequest(f"The model `{model}` does not exist or you do not have access to it.", status=404)
        return model

    def _embeddings(self, request: Recorded, corruption: str | None) -> Reply:
        body = _json_body(request, "We could not parse the JSON body of your request.")
        unknown = sorted(set(body) - self._EMBED_FIELDS)
        _require(not unknown, f"Unrecognized request argument supplied: {', '.join(unknown)}")
        model = self._check_model(body)
        inputs = _texts(
            body.get("input"),
            max_items=2048,
            non_empty=True,
            message="'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        )
        fmt = body.get("encoding_format", "float")
        _require(fmt in ("float", "base64"), f"'{fmt}' is not one of ['float', 'base64'] - 'encoding_format'")
        dim = body.get("dimensions", self.dim)
        _require(type(dim) is int and 1 <= dim <= self.dim, f"Invalid 'dimensions': {dim!r}.")
        vectors = self.embed(inputs, dim, corruption)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii") if fmt == "base64" else v,
            }
            for i, v in enumerate(vectors)
        ]
        if self.shuffle:
            data.reverse()
        tokens = sum(self.count_tokens(t) for t in inputs)
        key = "embeddings" if corruption == "shape" else "data"
        return json_reply(
            200,
            {"object": "list", key: data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
            {"x-request-id": self.next_id("req")},
        )

    def _chat(self, request: Recorded, corruption: str | None) -> Reply:
        body = _json_body(request, "We could not parse the JSON body of your request.")
        unknown = sorted(set(body) - self._CHAT_FIELDS)
        _require(not unknown, f"Unrecognized request argument supplied: {', '.join(unknown)}")
        model = self._check_model(body)
        messages = body.get("messages")
        _require(isinstance(messages, list) and bool(messages), "[] is too short - 'messages'")
        assert isinstance(messages, list)
        for i, m in enumerate(messages):
            _require(
                isinstance(m, dict) and m.get("role") in ("system", "developer", "user", "assistant", "tool"),
                f"Invalid value for 'messages[{i}].role'.",
            )
            _require(isinstance(m.get("content"), str), f"Invalid type for 'messages[{i}].content'.")
        for name in ("max_tokens", "max_completion_tokens"):
            if name in body:
                _require(type(body[name]) is int and body[name] >= 1, f"Invalid '{name}': must be a positive integer.")
        temperature = body.get("temperature", 1)
        _require(isinstance(temperature, int | float) and 0 <= temperature <= 2, "Invalid 'temperature'.")
        prompt = "\n".join(m["content"] for m in messages if m["role"] == "user")
        text = self.reply(prompt)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "finish_reason": "stop",
        }
        usage = {
            "prompt_tokens": _words(prompt),
            "completion_tokens": _words(text),
            "total_tokens": _words(prompt) + _words(text),
        }
        payload = {
            "id": self.next_id("chatcmpl"),
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices" if corruption != "shape" else "choice": [choice],
            "usage": usage,
        }
        return json_reply(200, payload, {"x-request-id": self.next_id("req")})


# -- Ollama -------------------------------------------------------------------------------


class OllamaServer(FakeServer):
    """Ollama's native ``/api/embed`` and ``/api/chat``.

    Ollama has no key; with ``api_key`` set, it stands for a server behind an
    authenticating proxy that wants a bearer token. A chat request that does
    not say ``"stream": false`` gets a stream of NDJSON chunks, as from Ollama.
    """

    provider = "ollama"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        dim: int = 64,
        models: Iterable[str] | None = None,
        reply: ReplyFn = echo_reply,
        embed_fn: EmbedFn | None = None,
        latency: float = 0.0,
    ) -> None:
        super().__init__(api_key=api_key, latency=latency)
        self.dim = dim
        self.models = frozenset(models) if models is not None else None
        self.reply = reply
        if embed_fn is not None:
            self.embed_fn = embed_fn

    def routes(self) -> Mapping[tuple[str, str], Callable[[Recorded, str | None], Reply]]:
        """Embed and chat."""
        return {("POST", "/api/embed"): self._embed, ("POST", "/api/chat"): self._chat}

    def check_auth(self, request: Recorded) -> Reply | None:
        """A bearer token, only if the server was given a key."""
        if self.api_key is None:
            return None
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error_reply(401, "unauthorized")
        return None

    def not_found(self, request: Recorded) -> Reply:
        """Ollama answers unknown paths with a plain-text 404."""
        return Reply(404, b"404 page not found", content_type="text/plain")

    def error_reply(
        self,
        status: int,
        message: str | None,
        *,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> Reply:
        """``{"error": "..."}``."""
        default = {
            429: "too many requests",
            500: "llama runner process has terminated: exit status 2",
            503: "server busy, please try again.  maximum pending requests exceeded",
        }.get(status, f"error {status}")
        return json_reply(status, {"error": message or default}, headers)

    def _check_model(self, body: Mapping[str, Any]) -> str:
        model = body.get("model")
        _require(isinstance(model, str) and bool(model), "model is required")
        assert isinstance(model, str)
        if self.models is not None and model not in self.models and model.split(":")[0] not in self.models:
            raise BadRequest(f'model "{model}" not found, try pulling it first', status=404)
        return model

    def _embed(self, request: Recorded, corruption: str | None) -> Reply:
        body = _json_body(request, "invalid character in request body")
        model = self._check_model(body)
        inputs = _texts(body.get("input"), max_items=1 << 20, non_empty=False, message="invalid input type")
        _require(isinstance(body.get("truncate", True), bool), "truncate must be a boolean")
        keep_alive = body.get("keep_alive")
        _require(keep_alive is None or isinstance(keep_alive, str | int | float), "invalid keep_alive")
        dim = body.get("dimensions") or self.dim
        _require(type(dim) is int and 1 <= dim <= self.dim, f"invalid dimensions: {dim!r}")
        vectors = self.embed(inputs, dim, corruption)
        return json_reply(
            200,
            {
                "model": model,
                "embeddings" if corruption != "shape" else "embedding": vectors,
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": sum(_words(t) for t in inputs),
            },
        )

    def _chat(self, request: Recorded, corruption: str | None) -> Reply:
        body = _json_body(request, "invalid character in request body")
        model = self._check_model(body)
        messages = body.get("messages")
        _require(isinstance(messages, list), "messages is required")
        assert isinstance(messages, list)
        for m in messages:
            _require(isinstance(m, dict) and isinstance(m.get("content"), str), "invalid message")
        options = body.get("options", {})
        _require(isinstance(options, dict), "options must be an object")
        prompt = "\n".join(m["content"] for m in messages if m.get("role") == "user")
        text = self.reply(prompt)
        done = {
            "model": model,
            "created_at": "2025-01-01T00:00:00.000000Z",
            "message" if corruption != "shape" else "response": {"role": "assistant", "content": text},
            "done_reason": "stop",
            "done": True,
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_count": _words(prompt),
            "prompt_eval_duration": 342546000,
            "eval_count": _words(text),
            "eval_duration": 4535599000,
        }
        if body.get("stream", True) is not False:
            chunks = [
                {
                    "model": model,
                    "created_at": done["created_at"],
                    "message": {"role": "assistant", "content": w + " "},
                    "done": False,
                }
                for w in text.split()
            ]
            lines = b"".join(json.dumps(c).encode() + b"\n" for c in [*chunks, done])
            return Reply(200, lines, content_type="application/x-ndjson")
        return json_reply(200, done)


# -- Cohere -------------------------------------------------------------------------------


class CohereServer(FakeServer):
    """Cohere's ``/v2/embed``: ``input_type`` and ``embedding_types`` are required."""

    provider = "cohere"
    INPUT_TYPES = frozenset({"search_document", "search_query", "classification", "clustering"})

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        dim: int = 64,
        models: Iterable[str] | None = None,
        embed_fn: EmbedFn | None = None,
        latency: float = 0.0,
    ) -> None:
        super().__init__(api_key=api_key, latency=latency)
        self.dim = dim
        self.models = frozenset(models) if models is not None else None
        if embed_fn is not None:
            self.embed_fn = embed_fn

    def routes(self) -> Mapping[tuple[str, str], Callable[[Recorded, str | None], Reply]]:
        """Embed v2."""
        return {("POST", "/v2/embed"): self._embed}

    def check_auth(self, request: Recorded) -> Reply | None:
        """``Authorization: Bearer <key>``, with Cohere's messages."""
        if self.api_key is None:
            return None
        auth = request.headers.get("authorization")
        if not auth:
            return self.error_reply(401, "no api key supplied")
        if auth != f"Bearer {self.api_key}":
            return self.error_reply(401, "invalid api token")
        return None

    def error_reply(
        self,
        status: int,
        message: str | None,
        *,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> Reply:
        """``{"id", "message"}``."""
        default = {
            401: "invalid api token",
            429: "You are using a Trial key, which is limited to 100 API calls / minute. "
            "You can continue to use the Trial key for free or upgrade to a Production key.",
            500: "internal server error, this has been reported to our developers",
            503: "service unavailable",
        }.get(status, f"error {status}")
        return json_reply(status, {"id": self.next_id("err"), "message": message or default}, headers)

    def _embed(self, request: Recorded, corruption: str | None) -> Reply:
        body = _json_body(request, "invalid request: could not parse the request body")
        model = body.get("model")
        _require(isinstance(model, str) and bool(model), "invalid request: model must be specified")
        if self.models is not None and model not in self.models:
            raise BadRequest(f"model '{model}' not found, make sure the correct model ID was used", status=404)
        texts = body.get("texts")
        _require(
            isinstance(texts, list) and 0 < len(texts) <= 96 and all(isinstance(t, str) for t in texts),
            "invalid request: texts must be a list of at most 96 strings",
        )
        input_type = body.get("input_type")
        _require(
            input_type in self.INPUT_TYPES,
            "invalid request: valid input_type must be provided with the provided model",
        )
        types = body.get("embedding_types")
        _require(
            isinstance(types, list) and types == ["float"],
            'invalid request: embedding_types must be provided; this server answers ["float"]',
        )
        truncate = body.get("truncate", "END")
        _require(truncate in ("NONE", "START", "END"), f"invalid request: invalid truncate value {truncate!r}")
        dim = body.get("output_dimension", self.dim)
        _require(
            type(dim) is int and 1 <= dim <= self.dim, f"invalid request: output_dimension {dim!r} is not supported"
        )
        assert isinstance(texts, list)
        vectors = self.embed(texts, dim, corruption)
        return json_reply(
            200,
            {
                "id": self.next_id("embed"),
                "texts": texts,
                "embeddings": {"float": vectors} if corruption != "shape" else {"floats": vectors},
                "meta": {
                    "api_version": {"version": "2"},
                    "billed_units": {"input_tokens": sum(_words(t) for t in texts)},
                },
                "response_type": "embeddings_by_type",
            },
        )


# -- Anthropic ----------------------------------------------------------------------------


class AnthropicServer(FakeServer):
    """Anthropic's ``/v1/messages``: ``x-api-key`` and ``anthropic-version`` are required."""

    provider = "anthropic"
    VERSIONS = frozenset({"2023-06-01", "2023-01-01"})
    _FIELDS = frozenset(
        {
            "model",
            "messages",
            "max_tokens",
            "system",
            "temperature",
            "top_p",
            "top_k",
            "stop_sequences",
            "stream",
            "metadata",
            "tools",
            "tool_choice",
            "thinking",
        }
    )
    _TYPES: ClassVar[Mapping[int, tuple[str, str]]] = {
        400: ("invalid_request_error", "invalid request"),
        401: ("authentication_error", "invalid x-api-key"),
        403: ("permission_error", "Your API key does not have permission to use the specified resource."),
        404: ("not_found_error", "The requested resource could not be found."),
        413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
        500: ("api_error", "Internal server error"),
        529: ("overloaded_error", "Overloaded"),
    }

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        reply: ReplyFn = echo_reply,
        models: Iterable[str] | None = None,
        latency: float = 0.0,
    ) -> None:
        super().__init__(api_key=api_key, latency=latency)
        self.reply = reply
        self.models = frozenset(models) if models is not None else None

    def routes(self) -> Mapping[tuple[str, str], Callable[[Recorded, str | None], Reply]]:
        """Messages."""
        return {("POST", "/v1/messages"): self._messages}

    def check_auth(self, request: Recorded) -> Reply | None:
        """``x-api-key`` (a bearer header is not accepted), then ``anthropic-version``."""
        key = request.headers.get("x-api-key")
        if self.api_key is not None:
            if not key:
                return self.error_reply(401, "x-api-key header is required")
            if key != self.api_key:
                return self.error_reply(401, "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            return self.error_reply(400, "anthropic-version: header is required")
        if version not in self.VERSIONS:
            return self.error_reply(400, f'anthropic-version: "{version}" is not a valid version')
        return None

    def error_reply(
        self,
        status: int,
        message: str | None,
        *,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> Reply:
        """``{"type": "error", "error": {"type", "message"}, "request_id"}``."""
        kind, default = self._TYPES.get(status, ("api_error", f"error {status}"))
        rid = self.next_id("req")
        return json_reply(
            status,
            {"type": "error", "error": {"type": error_type or kind, "message": message or default}, "request_id": rid},
            {"request-id": rid, **(headers or {})},
        )

    def _messages(self, request: Recorded, corruption: str | None) -> Reply:
        _require(
            request.headers.get("content-type", "").startswith("application/json"),
            "content-type must be application/json",
        )
        body = _json_body(request, "There was an issue with your request body: it is not valid JSON")
        extra = sorted(set(body) - self._FIELDS)
        _require(not extra, f"{extra[0] if extra else ''}: Extra inputs are not permitted")
        model = body.get("model")
        _require(isinstance(model, str) and bool(model), "model: Field required")
        if self.models is not None and model not in self.models:
            raise BadRequest(f"model: {model}", status=404)
        max_tokens = body.get("max_tokens")
        _require(type(max_tokens) is int and max_tokens >= 1, "max_tokens: Field required")
        temperature = body.get("temperature", 1.0)
        _require(isinstance(temperature, int | float) and 0 <= temperature <= 1, "temperature: must be between 0 and 1")
        messages = body.get("messages")
        _require(isinstance(messages, list) and bool(messages), "messages: Field required")
        assert isinstance(messages, list)
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            _require(
                role == ("user" if i % 2 == 0 else "assistant"),
                f'messages: roles must alternate between "user" and "assistant" (messages.{i})',
            )
            _require(isinstance(m.get("content"), str | list), f"messages.{i}.content: Field required")
        prompt = "\n".join(m["content"] for m in messages if m["role"] == "user" and isinstance(m["content"], str))
        text = self.reply(prompt)
        rid = self.next_id("req")
        return json_reply(
            200,
            {
                "id": self.next_id("msg"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content" if corruption != "shape" else "completion": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": _words(prompt), "output_tokens": _words(text)},
            },
            {"request-id": rid},
        )
