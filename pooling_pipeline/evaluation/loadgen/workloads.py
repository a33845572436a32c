"""What is sent: MS MARCO-like passages and queries, generated from a seed, as ready-to-send bodies.

Passages are synthetic web-answer snippets of ~40-120 tokens (the MS MARCO passage length range) built
from a fixed vocabulary and sentence templates, so a run is reproducible from its seed and needs no
download. Bodies are serialised once, before the run: the send loop only writes bytes.

Dialects: `openai` is vLLM's API (/v1/embeddings, /v1/rerank, /v1/score); `caikit` is Caikit-NLP's REST
API (/api/v1/task/embedding[-tasks], /api/v1/task/rerank), the incumbent.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field

_SUBJECTS = (
    "the thyroid gland",
    "a mortgage broker",
    "the Roman empire",
    "photosynthesis",
    "a heat pump",
    "the federal reserve",
    "vitamin D",
    "the Amazon river",
    "a credit score",
    "the immune system",
    "solar panels",
    "a hybrid car",
    "the French revolution",
    "caffeine",
    "a 401k plan",
    "the moon",
    "type 2 diabetes",
    "a ketogenic diet",
    "the stock market",
    "volcanoes",
    "an electric guitar",
    "the human liver",
    "a passport renewal",
    "blood pressure",
    "the printing press",
    "compound interest",
)
_VERBS = (
    "is responsible for",
    "helps regulate",
    "was first described in",
    "can significantly affect",
    "is commonly used to measure",
    "depends largely on",
    "usually costs about",
    "is closely related to",
    "was developed to improve",
    "plays an important role in",
    "typically lasts between",
)
_OBJECTS = (
    "the body's metabolism",
    "monthly payments",
    "energy production",
    "long-term health outcomes",
    "the average household",
    "local weather patterns",
    "interest rates",
    "cell growth and repair",
    "the price of consumer goods",
    "the early nineteenth century",
    "several hours",
    "insurance premiums",
    "water quality",
    "fuel efficiency",
    "the nervous system",
    "international trade",
    "bone density",
)
_TAILS = (
    "according to recent studies",
    "in most parts of the United States",
    "for adults over 50",
    "depending on the state",
    "although results vary",
    "as of last year",
    "in many cases",
    "which is why doctors recommend regular checks",
    "especially during the winter months",
    "when compared with older models",
    "based on the national average",
)
_QUESTIONS = ("what is", "how long does", "how much does", "why does", "when was", "what causes", "define")

_TOKEN = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """WordPiece-like count (words and punctuation, plus [CLS]/[SEP]); within ~10% for BERT-style
    tokenizers on this vocabulary. Pass a real tokenizer's count where exact tokens/s matter."""
    return len(_TOKEN.findall(text)) + 2


def passage(rng: random.Random, min_tokens: int = 40, max_tokens: int = 120) -> str:
    target = rng.randint(min_tokens, max_tokens)
    sentences: list[str] = []
    while True:
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}, {rng.choice(_TAILS)}."
        sentence = s[0].upper() + s[1:]
        current = estimate_tokens(" ".join(sentences)) if sentences else 0
        if sentences and current >= min_tokens and estimate_tokens(" ".join([*sentences, sentence])) > target:
            break
        sentences.append(sentence)
        if current >= target:
            break
    text = " ".join(sentences)
    # A last long sentence can overshoot: trim words back under the maximum.
    words = text.split()
    while estimate_tokens(" ".join(words)) > max_tokens:
        words.pop()
    return " ".join(words)


def passages(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [passage(rng) for _ in range(count)]


def queries(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed + 1_000_003)
    return [f"{rng.choice(_QUESTIONS)} {rng.choice(_SUBJECTS)} affect {rng.choice(_OBJECTS)}" for _ in range(count)]


class WorkloadKind(StrEnum):
    EMBEDDINGS = "embeddings"  # batch_size inputs per request
    RERANK = "rerank"  # one query, documents_per_query documents
    SCORE = "score"  # one query paired with documents_per_query documents (cross-encoder scores)


class Dialect(StrEnum):
    OPENAI = "openai"  # vLLM
    CAIKIT = "caikit"  # Caikit-NLP REST


class Workload(BaseModel):
    kind: WorkloadKind = WorkloadKind.EMBEDDINGS
    batch_size: int = Field(1, ge=1, description="inputs per embeddings request")
    documents_per_query: int = Field(16, ge=1, description="documents per rerank/score request")
    seed: int = 0

    @property
    def label(self) -> str:
        if self.kind is WorkloadKind.EMBEDDINGS:
            return f"embeddings x{self.batch_size}"
        return f"{self.kind.value} x{self.documents_per_query}"

    @property
    def inputs_per_request(self) -> int:
        return self.batch_size if self.kind is WorkloadKind.EMBEDDINGS else self.documents_per_query


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    path: str  # appended to the base URL
    body: bytes  # JSON, serialised once
    inputs: int  # texts (embeddings) or query-document pairs (rerank/score)
    tokens: int  # estimated input tokens


def _body(workload: Workload, dialect: Dialect, model: str, texts: list[str], query: str) -> tuple[str, dict]:
    kind = workload.kind
    if dialect is Dialect.OPENAI:
        if kind is WorkloadKind.EMBEDDINGS:
            return "/v1/embeddings", {"model": model, "input": texts[0] if len(texts) == 1 else texts}
        if kind is WorkloadKind.RERANK:
            return "/v1/rerank", {"model": model, "query": query, "documents": texts}
        return "/v1/score", {"model": model, "text_1": query, "text_2": texts}
    # Same bodies as evaluation/clients/caikit_api.py sends (truncate 0 = the model's own limit).
    if kind is WorkloadKind.EMBEDDINGS:
        params = {"truncate_input_tokens": 0}
        if len(texts) == 1:
            return "/api/v1/task/embedding", {"model_id": model, "inputs": texts[0], "parameters": params}
        return "/api/v1/task/embedding-tasks", {"model_id": model, "inputs": texts, "parameters": params}
    if kind is WorkloadKind.RERANK:
        return "/api/v1/task/rerank", {
            "model_id": model,
            "inputs": {"query": query, "documents": [{"text": t} for t in texts]},
            "parameters": {"top_n": len(texts), "return_documents": False, "return_query": False, "return_text": False},
        }
    raise ValueError(
        "Caikit-NLP has no cross-encoder score endpoint: compare rerank against the incumbent, "
        "or run the score workload against vLLM only"
    )


def prepare(workload: Workload, dialect: Dialect | str, model: str, distinct: int = 256) -> list[PreparedRequest]:
    """`distinct` different request bodies; the runner cycles through them (request i uses i % distinct),
    so a long run costs no more memory than a short one and no two neighbours are identical."""
    dialect = Dialect(dialect)
    per = workload.inputs_per_request
    pool = passages(max(64, min(4096, distinct * per)), workload.seed)
    qs = queries(distinct, workload.seed)
    rng = random.Random(workload.seed + 7)
    prepared = []
    for k in range(distinct):
        texts = [pool[rng.randrange(len(pool))] for _ in range(per)]
        path, body = _body(workload, dialect, model, texts, qs[k])
        tokens = sum(estimate_tokens(t) for t in texts)
        if workload.kind is not WorkloadKind.EMBEDDINGS:
            tokens += per * (estimate_tokens(qs[k]) - 1)  # the query goes with every pair
        prepared.append(PreparedRequest(path, json.dumps(body).encode(), per, tokens))
    return prepared
