"""Partitions: one per catalog model, and one per registered vLLM release.

Models are static partitions computed from the catalog when the code location loads: the catalog file
is the single source of truth and ships with the code, so adding a model is one YAML entry plus a
code-location reload (which `dagster dev` and a new image do anyway). Static partitions keep backfills
and the UI's partition grid exact, with no sensor needed to keep a dynamic set in sync.

vLLM releases are dynamic: the release sensor adds one when it sees a new version, and the
`serving_runtime` asset is materialised per release. Per-model assets always use the latest registered
release, so a new vLLM release re-validates every model without re-downloading or re-uploading them.
"""

from __future__ import annotations

import dagster as dg

from pooling_pipeline.catalog import active_catalog

model_partitions = dg.StaticPartitionsDefinition(active_catalog().names())

# The name as a plain str: DynamicPartitionsDefinition.name is typed Optional, instance calls need a str.
VLLM_RELEASES = "vllm_releases"
vllm_release_partitions = dg.DynamicPartitionsDefinition(name=VLLM_RELEASES)
