"""What every measurement of one model needs, in one object: the catalog entry, the model's facts, the
reference model's files, the clients of the served model and the incumbent, and the report being filled.

The reference (sentence-transformers / CrossEncoder on the same files vLLM serves) is reached through the
`Evaluation` methods, so its cache key (model, commit sha) is written in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pooling_pipeline.catalog import CatalogEntry
from pooling_pipeline.evaluation import metrics, reference
from pooling_pipeline.evaluation.clients import CaikitClient, EndpointError, OpenAIPoolingClient
from pooling_pipeline.evaluation.datasets import retrieval_set
from pooling_pipeline.evaluation.quality.models import QualityReport, RankingScores
from pooling_pipeline.ingest.model_facts import ModelFacts

TOP_K = 10


@dataclass
class Evaluation:
    entry: CatalogEntry
    facts: ModelFacts
    snapshot_dir: str  # the reference model's files: the S3 copy of the bytes vLLM serves
    served: OpenAIPoolingClient
    incumbent: CaikitClient | None
    report: QualityReport
    cache_dir: Path | None = None  # reference results, per (model, commit sha)

    def reference_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        return reference.reference_embeddings(
            self.snapshot_dir, texts, model=self.entry.name, commit_sha=self.facts.commit_sha, cache_dir=self.cache_dir
        )

    def reference_logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return reference.reference_logits(
            self.snapshot_dir, pairs, model=self.entry.name, commit_sha=self.facts.commit_sha, cache_dir=self.cache_dir
        )

    def count_tokens(self, text: str) -> int:
        return reference.count_tokens(self.snapshot_dir, text)

    def text_with_tokens(self, seed: str, total_tokens: int) -> str:
        return reference.text_with_tokens(self.snapshot_dir, seed, total_tokens)


def start_evaluation(
    entry: CatalogEntry,
    facts: ModelFacts,
    snapshot_dir: str,
    served: OpenAIPoolingClient,
    incumbent: CaikitClient | None,
    cache_dir: Path | None,
) -> Evaluation:
    """The evaluation with an empty report that already knows the server's limit and version."""
    report = QualityReport(
        model=entry.name,
        kind=entry.kind,
        commit_sha=facts.commit_sha,
        served_url=served.base_url,
        served_model_name=served.model,
        incumbent_url=incumbent.base_url if incumbent else None,
        incumbent_model_id=incumbent.model_id if incumbent else None,
    )
    report.served_max_model_len = served.max_model_len()
    try:
        report.served_version = served.version()
    except EndpointError as exc:
        report.findings.append(f"/version unavailable: {exc}")
    return Evaluation(entry, facts, snapshot_dir, served, incumbent, report, cache_dir)


def ranking_scores(sim: np.ndarray, qids: list[str]) -> RankingScores:
    """nDCG@10 and MRR@10 over the labelled retrieval set, from a (query x passage) score matrix."""
    data = retrieval_set()
    labels = {q: data.labels(q) for q in qids}
    scores = {q: list(sim[i]) for i, q in enumerate(qids)}
    return RankingScores(
        ndcg_at_10=metrics.mean_over_queries(metrics.ndcg_at_k, scores, labels, TOP_K),
        mrr_at_10=metrics.mean_over_queries(metrics.mrr_at_k, scores, labels, TOP_K),
    )
