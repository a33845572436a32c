"""The blocking quality checks: their names and the shape of one outcome, defined once.

quality_report evaluates them (and declares them as Dagster asset checks), load_benchmark and
migration_readiness are gated by them, and the readiness report shows a model they blocked. All of these
import the names from here, so a renamed check fails the type check, not a report at run time.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class CheckName(StrEnum):
    EMBEDDING_PARITY = "embedding_parity"
    DIMENSION_MATCHES = "dimension_matches"
    RERANKER_PARITY = "reranker_parity"
    RANKING_CORRECT = "ranking_correct"


CHECK_DESCRIPTIONS: dict[CheckName, str] = {
    CheckName.EMBEDDING_PARITY: "per-probe cosine of served vs sentence-transformers embeddings ≥ catalog min_cosine",
    CheckName.DIMENSION_MATCHES: "served embedding size equals the catalog's dimension and the model's",
    CheckName.RERANKER_PARITY: "served scores match CrossEncoder.predict: Spearman, max |diff|, top-1 agreement",
    CheckName.RANKING_CORRECT: "nDCG@10 / MRR@10 on the labelled retrieval set within tolerance of the reference",
}

# Metadata key under which quality_report stores its outcomes as JSON: the readiness report reads a model
# blocked by a check from there (Dagster has no public API for a partition's check history).
CHECKS_METADATA_KEY = "checks_json"


class CheckOutcome(BaseModel):
    """One check's outcome on one evaluation. A check that does not apply to the model's kind passes."""

    name: CheckName
    passed: bool
    reason: str = ""
    applicable: bool = True
