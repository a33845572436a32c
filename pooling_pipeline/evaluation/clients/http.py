"""The HTTP plumbing both API dialects share: timeouts, retries on connection errors, readable errors.

A server that answers with an error is reported with its status and the message it sent (quoted, trimmed),
so a failing check says "HTTP 400 from /v1/embeddings: This model's maximum context length is 256 tokens",
not a stack trace. Only connection-level failures (refused, reset before any answer) are retried: a server
that is still starting, or restarting, gets a few chances; an answer, even an error, is never retried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import httpx

from pooling_pipeline.serving.endpoint_auth import auth_failure_hint

BODY_EXCERPT_CHARS = 500


class EndpointError(RuntimeError):
    """A request to a model server failed; `status` is None when no HTTP answer came back."""

    def __init__(self, message: str, *, url: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body[:BODY_EXCERPT_CHARS]

    @property
    def server_message(self) -> str:
        """The error text the server sent (OpenAI `error.message`, FastAPI `detail`, Caikit `details`)."""
        return extract_server_message(self.body)


def extract_server_message(body: str) -> str:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, TypeError):
        return body.strip()[:BODY_EXCERPT_CHARS]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for key in ("message", "detail", "details", "error"):
            if data.get(key):
                return str(data[key]) if not isinstance(data[key], str) else data[key]
    return body.strip()[:BODY_EXCERPT_CHARS]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # total tries on connection errors
    backoff_s: float = 0.5  # first wait; doubles each time

    def waits(self):
        for i in range(self.attempts - 1):
            yield self.backoff_s * (2**i)


class JsonHttpClient:
    """A small JSON-over-HTTP client bound to one base URL (`http://host:port`, no trailing path)."""

    def __init__(
        self, base_url: str, *, timeout_s: float = 60.0, retry: RetryPolicy | None = None, api_name: str = "server"
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.api_name = api_name
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def authorize(self, headers: Mapping[str, str], verify: bool | str = True) -> Self:
        """Send `headers` (a token-authenticated endpoint's bearer token, from serving/endpoint_auth.py
        `request_headers`) with every request, verifying TLS with `verify` (its `tls_verify`). Returns self."""
        if verify is not True:
            self._client.close()
            self._client = httpx.Client(base_url=self.base_url, timeout=self.timeout_s, verify=verify)
        self._client.headers.update(headers)
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def health(self) -> bool:
        """Both dialects (vLLM and Caikit) answer GET /health with 200 when ready."""
        try:
            self.request("GET", "/health", timeout_s=10.0)
            return True
        except EndpointError:
            return False

    def request(self, method: str, path: str, payload: Any = None, *, timeout_s: float | None = None) -> httpx.Response:
        """Send one request (retrying connection failures) and return a 2xx response or raise EndpointError."""
        url = f"{self.base_url}{path}"
        waits = iter(self.retry.waits())
        while True:
            try:
                resp = self._client.request(
                    method, path, json=payload, timeout=timeout_s if timeout_s is not None else self.timeout_s
                )
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                wait = next(waits, None)
                if wait is None:
                    raise EndpointError(
                        f"cannot reach the {self.api_name} at {url} after {self.retry.attempts} tries ({exc}): "
                        "check that it is running and the URL/port is right",
                        url=url,
                    ) from None
                time.sleep(wait)
            except httpx.TimeoutException:
                raise EndpointError(
                    f"the {self.api_name} at {url} did not answer within "
                    f"{timeout_s if timeout_s is not None else self.timeout_s:g} s: it may be overloaded or hung; "
                    "check its log, or raise the client timeout",
                    url=url,
                ) from None
            except httpx.HTTPError as exc:
                raise EndpointError(f"request to the {self.api_name} at {url} failed: {exc}", url=url) from None
        if resp.status_code >= 400:
            body = resp.text
            hint = auth_failure_hint(resp.status_code)
            raise EndpointError(
                f"HTTP {resp.status_code} from the {self.api_name} at {method} {path}: "
                f"{extract_server_message(body) or '(empty body)'}" + (f"; {hint}" if hint else ""),
                url=url,
                status=resp.status_code,
                body=body,
            )
        return resp

    def json(self, method: str, path: str, payload: Any = None, *, timeout_s: float | None = None) -> Any:
        resp = self.request(method, path, payload, timeout_s=timeout_s)
        try:
            return resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EndpointError(
                f"the {self.api_name} at {method} {path} answered HTTP {resp.status_code} with a body that is not "
                f"JSON: {resp.text[:200]!r}; is this URL really a {self.api_name}?",
                url=f"{self.base_url}{path}",
                status=resp.status_code,
                body=resp.text,
            ) from None

    def text(self, path: str) -> str:
        return self.request("GET", path).text


def malformed(api_name: str, path: str, what: str, data: Any, url: str) -> EndpointError:
    """A 2xx answer whose JSON lacks what the API promises."""
    excerpt = json.dumps(data)[:200] if not isinstance(data, str) else data[:200]
    return EndpointError(
        f"unexpected answer from the {api_name} at {path}: {what} (got {excerpt}); "
        "is the server the API version this client speaks?",
        url=url,
        body=excerpt,
    )
