"""Client for vLLM's OpenAI-compatible pooling API: embeddings, pooling, score, rerank, and server facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pooling_pipeline.evaluation.clients.http import EndpointError, JsonHttpClient, RetryPolicy, malformed

API_NAME = "vLLM OpenAI-compatible server"


@dataclass(frozen=True)
class RerankResult:
    index: int
    relevance_score: float


@dataclass(frozen=True)
class EmbedAttempt:
    """The outcome of an embedding request that may legitimately be refused (over-length input).

    Exactly one of `vectors` / `error` is set; `status` is the HTTP status of the refusal (400 for over-length).
    """

    vectors: list[list[float]] | None = None
    status: int | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.vectors is not None


class OpenAIPoolingClient(JsonHttpClient):
    """One vLLM server; `model` is the served model name sent in every body."""

    def __init__(self, base_url: str, model: str, *, timeout_s: float = 60.0, retry: RetryPolicy | None = None):
        super().__init__(base_url, timeout_s=timeout_s, retry=retry, api_name=API_NAME)
        self.model = model

    # --- embeddings -------------------------------------------------------------------------------------
    def embed_raw(self, inputs: str | list[str], *, truncate_prompt_tokens: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": inputs, "encoding_format": "float"}
        if truncate_prompt_tokens is not None:
            body["truncate_prompt_tokens"] = truncate_prompt_tokens
        return self.json("POST", "/v1/embeddings", body)

    def embed(self, inputs: str | list[str], *, truncate_prompt_tokens: int | None = None) -> list[list[float]]:
        """Embeddings in input order (a single string gives a one-element list)."""
        data = self.embed_raw(inputs, truncate_prompt_tokens=truncate_prompt_tokens)
        return _embeddings_in_order(data, 1 if isinstance(inputs, str) else len(inputs), self.base_url)

    def try_embed(self, inputs: str | list[str], *, truncate_prompt_tokens: int | None = None) -> EmbedAttempt:
        """Like `embed`, but an HTTP 4xx refusal (e.g. input over max_model_len) is returned, not raised."""
        try:
            data = self.embed_raw(inputs, truncate_prompt_tokens=truncate_prompt_tokens)
        except EndpointError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return EmbedAttempt(status=exc.status, error=exc.server_message or str(exc))
            raise
        vectors = _embeddings_in_order(data, 1 if isinstance(inputs, str) else len(inputs), self.base_url)
        usage = data.get("usage") or {}
        return EmbedAttempt(vectors=vectors, status=200, prompt_tokens=usage.get("prompt_tokens"))

    def pooling(self, inputs: str | list[str]) -> list[Any]:
        """Raw pooler output from /pooling (`data[].data`), in input order."""
        data = self.json("POST", "/pooling", {"model": self.model, "input": inputs})
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise malformed(API_NAME, "/pooling", "no data[] list", data, self.base_url)
        return [item["data"] for item in sorted(items, key=lambda d: d.get("index", 0))]

    # --- cross-encoders ---------------------------------------------------------------------------------
    def score(self, text_1: str | list[str], text_2: str | list[str]) -> list[float]:
        """/v1/score with text_1/text_2: one score per pair (one query against many documents works too)."""
        data = self.json("POST", "/v1/score", {"model": self.model, "text_1": text_1, "text_2": text_2})
        return _scores_in_order(data, "/v1/score", self.base_url)

    def score_queries(self, queries: str | list[str], documents: list[str]) -> list[float]:
        """/v1/score with the newer queries/documents field names."""
        data = self.json("POST", "/v1/score", {"model": self.model, "queries": queries, "documents": documents})
        return _scores_in_order(data, "/v1/score", self.base_url)

    def rerank(
        self, query: str, documents: list[str], *, top_n: int | None = None, version: int = 1
    ) -> list[RerankResult]:
        """/v1/rerank (or /v2/rerank): results best first, each with the document's index."""
        path = f"/v{version}/rerank"
        body: dict[str, Any] = {"model": self.model, "query": query, "documents": documents}
        if top_n is not None:
            body["top_n"] = top_n
        data = self.json("POST", path, body)
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise malformed(API_NAME, path, "no results[] list", data, self.base_url)
        try:
            return [RerankResult(int(r["index"]), float(r["relevance_score"])) for r in results]
        except (KeyError, TypeError, ValueError):
            raise malformed(API_NAME, path, "results[] without index/relevance_score", data, self.base_url) from None

    # --- server facts -----------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        data = self.json("GET", "/v1/models")
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise malformed(API_NAME, "/v1/models", "no data[] list", data, self.base_url)
        return items

    def max_model_len(self) -> int | None:
        for item in self.models():
            if item.get("id") == self.model:
                return item.get("max_model_len")
        ids = [m.get("id") for m in self.models()]
        raise EndpointError(
            f"{self.base_url} does not serve a model named {self.model!r} (it serves {ids}): "
            "check the served model name",
            url=f"{self.base_url}/v1/models",
        )

    def version(self) -> str:
        data = self.json("GET", "/version")
        if not isinstance(data, dict) or "version" not in data:
            raise malformed(API_NAME, "/version", "no version field", data, self.base_url)
        return str(data["version"])

    def metrics(self) -> str:
        """Prometheus text exposition from /metrics."""
        return self.text("/metrics")


def _embeddings_in_order(data: Any, expected: int, url: str) -> list[list[float]]:
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) != expected:
        raise malformed(API_NAME, "/v1/embeddings", f"expected data[] with {expected} embeddings", data, url)
    try:
        ordered = sorted(items, key=lambda d: d.get("index", 0))
        return [[float(x) for x in item["embedding"]] for item in ordered]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise malformed(API_NAME, "/v1/embeddings", "data[] items without a float embedding", data, url) from None


def _scores_in_order(data: Any, path: str, url: str) -> list[float]:
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise malformed(API_NAME, path, "no data[] list", data, url)
    try:
        return [float(item["score"]) for item in sorted(items, key=lambda d: d.get("index", 0))]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise malformed(API_NAME, path, "data[] items without a score", data, url) from None
