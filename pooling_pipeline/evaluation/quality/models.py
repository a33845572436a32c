"""What quality_report hands downstream: measurements of the served model (and the incumbent) next to the
reference, plus the checks' outcomes. Pydantic models only: no I/O, no judgement."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.evaluation.quality.checks import CheckName, CheckOutcome


class ProbeRow(BaseModel):
    probe: str
    tokens: int
    text_excerpt: str
    served_cosine: float | None = None  # served vs reference
    incumbent_cosine: float | None = None  # incumbent vs reference
    served_vs_incumbent_cosine: float | None = None
    served_norm: float | None = None
    reference_norm: float | None = None
    served_error: str | None = None
    incumbent_error: str | None = None


class RankingScores(BaseModel):
    ndcg_at_10: float
    mrr_at_10: float


class OverLength(BaseModel):
    """What happens at max_model_len + 1 tokens (a finding, recorded either way)."""

    max_model_len: int
    tokens: int
    served_status: int | None  # 400 = rejected, 200 = accepted
    served_behaviour: str  # rejected | accepted
    served_message: str | None = None
    truncated_status: int | None = None  # with truncate_prompt_tokens = max_model_len
    truncated_cosine: float | None = None  # truncated served vs reference (which truncates at its own limit)
    incumbent_status: int | None = None
    incumbent_message: str | None = None


class RerankerParity(BaseModel):
    pairs: int
    scale: str  # the scale both sides were compared on: "sigmoid" or "logit"
    spearman: float
    max_abs_diff: float
    top1_agreement: float  # fraction of queries whose best passage is the same as the reference's
    rerank_consistent: bool  # /v1/rerank and /v2/rerank order and scores match /v1/score
    rerank_note: str = ""
    incumbent_spearman: float | None = None
    incumbent_max_abs_diff: float | None = None
    incumbent_top1_agreement: float | None = None


class QualityReport(BaseModel):
    model: str
    kind: ModelKind
    commit_sha: str
    served_url: str
    served_model_name: str
    served_max_model_len: int | None = None
    served_version: str | None = None
    incumbent_url: str | None = None
    incumbent_model_id: str | None = None
    # embeddings
    dimension_served: int | None = None
    dimension_reference: int | None = None
    dimension_incumbent: int | None = None
    normalize_expected: bool | None = None  # the model's modules include Normalize
    normalised_served: bool | None = None
    probes: list[ProbeRow] = Field(default_factory=list)
    min_cosine: float | None = None
    mean_cosine: float | None = None
    incumbent_min_cosine: float | None = None
    incumbent_mean_cosine: float | None = None
    # rankings (embeddings: cosine retrieval; rerankers: cross-encoder scores), by source
    ranking: dict[str, RankingScores] = Field(default_factory=dict)  # "reference" | "served" | "incumbent"
    reranker: RerankerParity | None = None
    over_length: OverLength | None = None
    known_gaps: list[str] = Field(default_factory=list)
    findings: list[str] = Field(default_factory=list)
    checks: dict[CheckName, CheckOutcome] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks.values())

    @property
    def metrics(self) -> dict[str, float]:
        """Headline numbers (higher is better) for plots over time and the readiness report."""
        out: dict[str, float] = {}
        if self.min_cosine is not None:
            out["min_cosine"] = self.min_cosine
            out["mean_cosine"] = self.mean_cosine or self.min_cosine
        served = self.ranking.get("served")
        if served is not None:
            out["ndcg_at_10"] = served.ndcg_at_10
            out["mrr_at_10"] = served.mrr_at_10
        if self.reranker is not None:
            out["spearman"] = self.reranker.spearman
            out["top1_agreement"] = self.reranker.top1_agreement
        return out
