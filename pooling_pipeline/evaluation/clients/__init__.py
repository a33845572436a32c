"""HTTP clients for the two API dialects a model is compared through: vLLM (OpenAI-compatible) and Caikit-NLP."""

from pooling_pipeline.evaluation.clients.caikit_api import CaikitClient
from pooling_pipeline.evaluation.clients.http import EndpointError, RetryPolicy
from pooling_pipeline.evaluation.clients.openai_api import EmbedAttempt, OpenAIPoolingClient, RerankResult

__all__ = ["CaikitClient", "EmbedAttempt", "EndpointError", "OpenAIPoolingClient", "RerankResult", "RetryPolicy"]
