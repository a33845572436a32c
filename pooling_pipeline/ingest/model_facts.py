"""What `hf_snapshot` learns about a model, and what every later step relies on.

`ModelFacts` is the contract between ingest and serving/evaluation: the manifests take
`effective_max_model_len` from here (never from a hand-written number), the quality checks take
`dimension`, `pooling_mode` and `normalize`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from pooling_pipeline.catalog import ModelKind


class ModelFacts(BaseModel):
    model_config = ConfigDict(frozen=True)

    repo_id: str
    revision: str  # the catalog's ref, e.g. "main"
    commit_sha: str  # what it resolved to: the asset's DataVersion
    kind: ModelKind
    architecture: str  # config.json architectures[0], e.g. BertModel, BertForSequenceClassification
    model_type: str  # config.json model_type, e.g. bert
    hidden_size: int
    dimension: int | None  # output embedding size (embeddings); None for rerankers
    pooling_mode: str | None  # sentence-transformers pooling: mean | cls | lasttoken | max ...
    normalize: bool  # sentence-transformers Normalize module present
    num_labels: int | None  # rerankers (cross-encoders)
    max_position_embeddings: int | None
    st_max_seq_length: int | None  # sentence_bert_config.json max_seq_length
    effective_max_model_len: int  # min of the above limits and the catalog override
    parameter_count: int | None
    weights_bytes: int
    files: list[str]
