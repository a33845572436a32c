"""Literals that several domains share, named once (no imports: every layer may depend on this module).

Settings that an operator changes are environment variables read in resources/config.py; these are the
values used when they are not set, and the defaults of the typed models that carry them.
"""

# Namespace of the InferenceServices, ServingRuntimes and the data connection (POOLING_NAMESPACE).
DEFAULT_NAMESPACE = "pooling-models"
# Bucket of the model snapshots when POOLING_S3_BUCKET is unset (the local stack's; required on a cluster).
DEFAULT_BUCKET = "pooling-models"
# The vLLM release rendered and served when none is named (POOLING_LOCAL_VLLM_VERSION, `render --vllm-version`).
DEFAULT_VLLM_VERSION = "0.32.0"
