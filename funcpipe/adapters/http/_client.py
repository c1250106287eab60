"""The client side: authenticated JSON POSTs to one provider, and the transport guard.

`HTTPAdapter.post` reads the key at call time, refuses to send it over plain
``http://`` to a host that is not a loopback address, and sends the request
through `post_json`, which never follows a redirect (one could carry the key
to another host, or to plain http) and never raises: every failure comes
back as an ``Err`` of the taxonomy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import httpx

from funcpipe.adapters.config import insecure_key_transport
from funcpipe.adapters.http._errors import error, exception_error, malformed, response_error
from funcpipe.adapters.resources import Resources
from funcpipe.core import Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.errors import RunError


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
