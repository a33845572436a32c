""" "API works": one small request per endpoint a client of this kind calls, against the served model.

The quality report proves the numbers are right; this proves the endpoints the migrated clients call
answer in the shape they parse (an embedding list; rerank results with relevance scores; score data).
Whatever a server answers (an error page, another shape, nothing), each endpoint gets a verdict and a
reason that says what a client would hit and where to look; the probe itself never raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from pooling_pipeline.catalog import ModelKind

QUERY = "what is a pooling model?"
DOCS = ["A pooling model turns text into a vector or a score.", "Bananas are yellow."]


def _requests(kind: ModelKind, model: str) -> dict[str, dict[str, Any]]:
    if kind is ModelKind.EMBEDDING:
        return {"/v1/embeddings": {"model": model, "input": [QUERY]}}
    return {
        "/rerank": {"model": model, "query": QUERY, "documents": DOCS},
        # text_1/text_2 is the request shape every vLLM release with /score accepts.
        "/score": {"model": model, "text_1": QUERY, "text_2": DOCS},
    }


def _shape_ok(path: str, body: Any) -> str:
    """'' when the response has the shape clients parse, else what is wrong."""
    if not isinstance(body, dict):
        return f"expected a JSON object, got {type(body).__name__}"
    try:
        return _shape_problem(path, body)
    except (AttributeError, TypeError, KeyError, IndexError) as exc:  # items of another type than clients parse
        return f"unexpected response shape ({type(exc).__name__}: {exc})"


def _shape_problem(path: str, body: dict[str, Any]) -> str:
    if path == "/v1/embeddings":
        data = body.get("data") or []
        if not data or not isinstance(data[0].get("embedding"), list) or not data[0]["embedding"]:
            return "no data[0].embedding in the response"
    elif path == "/rerank":
        results = body.get("results") or []
        if len(results) != len(DOCS) or "relevance_score" not in results[0]:
            return f"expected {len(DOCS)} results with relevance_score"
    elif path == "/score":
        data = body.get("data") or []
        if len(data) != len(DOCS) or "score" not in data[0]:
            return f"expected {len(DOCS)} data items with score"
    return ""


def _http_problem(path: str, response: httpx.Response) -> str:
    """What a client would read, plus where to look."""
    hint = {
        404: f"this server does not serve {path} for the model (a vLLM release or --runner/--task without it, "
        "or another served model name)",
        400: "the server refused the request shape clients send",
        401: "the endpoint needs a token the probe was not given",
        403: "the endpoint refused the probe's identity",
    }.get(response.status_code, "the server failed the request: see its log")
    return f"HTTP {response.status_code}: {hint}: {response.text[:200]}"


def probe_endpoints(
    base_url: str,
    served_model_name: str,
    kind: ModelKind,
    timeout_s: float = 30.0,
    *,
    headers: Mapping[str, str] | None = None,
    verify: bool | str = True,
) -> tuple[dict[str, bool], dict[str, str]]:
    """(endpoint -> worked, endpoint -> why not) for every endpoint of the kind.

    `headers`/`verify`: a token-authenticated endpoint's bearer token and CA (serving/endpoint_auth.py)."""
    ok: dict[str, bool] = {}
    errors: dict[str, str] = {}
    with httpx.Client(
        base_url=base_url.rstrip("/"), timeout=timeout_s, headers=dict(headers or {}), verify=verify
    ) as client:
        for path, payload in _requests(kind, served_model_name).items():
            try:
                response = client.post(path, json=payload)
            except httpx.HTTPError as exc:
                ok[path], errors[path] = False, f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code != 200:
                ok[path], errors[path] = False, _http_problem(path, response)
                continue
            try:
                problem = _shape_ok(path, response.json())
            except ValueError:
                problem = "response is not JSON"
            ok[path] = not problem
            if problem:
                errors[path] = problem
    return ok, errors
