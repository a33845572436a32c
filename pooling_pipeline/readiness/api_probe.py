""""API works": one small request per endpoint a client of this kind calls, against the served model.

The quality report proves the numbers are right; this proves the endpoints the migrated clients call
answer in the shape they parse (an embedding list; rerank results with relevance scores; score data).
"""

from __future__ import annotations

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


def probe_endpoints(base_url: str, served_model_name: str, kind: ModelKind,
                    timeout_s: float = 30.0) -> tuple[dict[str, bool], dict[str, str]]:
    """(endpoint -> worked, endpoint -> why not) for every endpoint of the kind."""
    ok: dict[str, bool] = {}
    errors: dict[str, str] = {}
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s) as client:
        for path, payload in _requests(kind, served_model_name).items():
            try:
                response = client.post(path, json=payload)
            except httpx.HTTPError as exc:
                ok[path], errors[path] = False, f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code != 200:
                ok[path], errors[path] = False, f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            try:
                problem = _shape_ok(path, response.json())
            except ValueError:
                problem = "response is not JSON"
            ok[path] = not problem
            if problem:
                errors[path] = problem
    return ok, errors
