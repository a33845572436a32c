"""Client for the Caikit-NLP REST API (the incumbent): the model is chosen by `model_id` in each body."""

from __future__ import annotations

from typing import Any

from pooling_pipeline.evaluation.clients.http import EndpointError, JsonHttpClient, RetryPolicy, malformed
from pooling_pipeline.evaluation.clients.openai_api import EmbedAttempt, RerankResult

API_NAME = "Caikit-NLP REST server"


class CaikitClient(JsonHttpClient):
    def __init__(self, base_url: str, model_id: str, *, timeout_s: float = 60.0, retry: RetryPolicy | None = None):
        super().__init__(base_url, timeout_s=timeout_s, retry=retry, api_name=API_NAME)
        self.model_id = model_id

    def _task(self, task: str, inputs: Any, parameters: dict[str, Any] | None = None) -> Any:
        body: dict[str, Any] = {"model_id": self.model_id, "inputs": inputs}
        if parameters:
            body["parameters"] = parameters
        return self.json("POST", f"/api/v1/task/{task}", body)

    def embed_one(self, text: str, *, truncate_input_tokens: int = 0) -> list[float]:
        """/api/v1/task/embedding; truncate_input_tokens 0 = the model's own limit (Caikit's default)."""
        data = self._task("embedding", text, {"truncate_input_tokens": truncate_input_tokens})
        try:
            return [float(x) for x in data["result"]["data"]["values"]]
        except (KeyError, TypeError, ValueError):
            raise malformed(API_NAME, "/api/v1/task/embedding", "no result.data.values", data, self.base_url) from None

    def embed(self, texts: list[str], *, truncate_input_tokens: int = 0) -> list[list[float]]:
        """/api/v1/task/embedding-tasks: one vector per text, in order."""
        data = self._task("embedding-tasks", texts, {"truncate_input_tokens": truncate_input_tokens})
        try:
            vectors = [[float(x) for x in v["data"]["values"]] for v in data["results"]["vectors"]]
        except (KeyError, TypeError, ValueError):
            raise malformed(
                API_NAME, "/api/v1/task/embedding-tasks", "no results.vectors[].data.values", data, self.base_url
            ) from None
        if len(vectors) != len(texts):
            raise malformed(
                API_NAME, "/api/v1/task/embedding-tasks", f"expected {len(texts)} vectors", data, self.base_url
            )
        return vectors

    def try_embed_one(self, text: str, *, truncate_input_tokens: int = 0) -> EmbedAttempt:
        try:
            return EmbedAttempt(vectors=[self.embed_one(text, truncate_input_tokens=truncate_input_tokens)], status=200)
        except EndpointError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return EmbedAttempt(status=exc.status, error=exc.server_message or str(exc))
            raise

    def sentence_similarity(self, source: str, sentences: list[str]) -> list[float]:
        data = self._task("sentence-similarity", {"source_sentence": source, "sentences": sentences})
        try:
            return [float(s) for s in data["result"]["scores"]]
        except (KeyError, TypeError, ValueError):
            raise malformed(
                API_NAME, "/api/v1/task/sentence-similarity", "no result.scores", data, self.base_url
            ) from None

    def rerank(self, query: str, documents: list[str], *, top_n: int | None = None) -> list[RerankResult]:
        """Results best first, with the document index (Caikit returns them sorted by score)."""
        params: dict[str, Any] = {
            "top_n": top_n if top_n is not None else len(documents),
            "return_documents": False,
            "return_query": False,
            "return_text": False,
        }
        data = self._task("rerank", {"query": query, "documents": [{"text": d} for d in documents]}, params)
        try:
            results = [RerankResult(int(s.get("index", 0)), float(s["score"])) for s in data["result"]["scores"]]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise malformed(
                API_NAME, "/api/v1/task/rerank", "no result.scores[]{index, score}", data, self.base_url
            ) from None
        return sorted(results, key=lambda r: -r.relevance_score)

    def models(self) -> dict[str, Any]:
        """/info/models: what the runtime has loaded."""
        return self.json("GET", "/info/models")
