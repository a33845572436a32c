"""Quality: does vLLM serve what the model is? Measured against the sentence-transformers reference.

- `checks`: the blocking checks' names and outcome model (shared with readiness);
- `models`: the QualityReport the asset returns;
- `decide`: pure, the checks' outcomes from the measurements;
- `context`, `embedding`, `reranker`, `measure`: talking to the servers and the reference;
- `render`: markdown tables; `reference_files`: the reference model's files from S3.
"""

from pooling_pipeline.evaluation.quality.checks import CHECK_DESCRIPTIONS, CHECKS_METADATA_KEY, CheckName, CheckOutcome
from pooling_pipeline.evaluation.quality.decide import decide_checks
from pooling_pipeline.evaluation.quality.measure import evaluate
from pooling_pipeline.evaluation.quality.models import (
    OverLength,
    ProbeRow,
    QualityReport,
    RankingScores,
    RerankerParity,
)

__all__ = [
    "CHECKS_METADATA_KEY",
    "CHECK_DESCRIPTIONS",
    "CheckName",
    "CheckOutcome",
    "OverLength",
    "ProbeRow",
    "QualityReport",
    "RankingScores",
    "RerankerParity",
    "decide_checks",
    "evaluate",
]
