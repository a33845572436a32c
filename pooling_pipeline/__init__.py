"""pooling_pipeline: Caikit -> vLLM migration readiness for embedding and reranker models on OpenShift AI."""
