"""Served model vs reference (vs incumbent): run every measurement for one model, then decide its checks.

The incumbent (Caikit), when given, gets the same probes; its numbers sit beside vLLM's in the report but
never decide a check: the gate is "vLLM serves what the model is".
"""

from __future__ import annotations

from pathlib import Path

from pooling_pipeline.catalog import CatalogEntry, ModelKind
from pooling_pipeline.evaluation.clients import CaikitClient, OpenAIPoolingClient
from pooling_pipeline.evaluation.quality.context import start_evaluation
from pooling_pipeline.evaluation.quality.decide import decide_checks
from pooling_pipeline.evaluation.quality.embedding import measure_embedding
from pooling_pipeline.evaluation.quality.models import QualityReport
from pooling_pipeline.evaluation.quality.reranker import measure_reranker
from pooling_pipeline.ingest.model_facts import ModelFacts


def evaluate(
    entry: CatalogEntry,
    facts: ModelFacts,
    snapshot_dir: str,
    served: OpenAIPoolingClient,
    incumbent: CaikitClient | None = None,
    *,
    cache_dir: Path | None = None,
) -> QualityReport:
    """The model's QualityReport: every measurement, and the checks' outcomes decided from them.

    `snapshot_dir` holds the model's files for the reference (sentence-transformers); quality_report
    downloads them from the model's S3 copy, so the reference is computed on the bytes vLLM serves.
    """
    ev = start_evaluation(entry, facts, snapshot_dir, served, incumbent, cache_dir)
    if entry.kind is ModelKind.EMBEDDING:
        measure_embedding(ev)
        expected_dimension = entry.dimension or facts.dimension
    else:
        measure_reranker(ev)
        expected_dimension = None
    ev.report.checks = decide_checks(ev.report, entry.quality, expected_dimension)
    return ev.report
