"""The fixed evaluation data shipped with the package (probe sentences, a small retrieval set)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from pydantic import BaseModel


class Probe(BaseModel):
    id: str
    text: str
    languages: list[str]  # "*" = every model; a language code or "multi" = multilingual models only


class RetrievalSet(BaseModel):
    queries: dict[str, str]  # id -> text
    passages: dict[str, str]  # id -> text (insertion order is the document order)
    qrels: dict[str, dict[str, int]]  # query id -> passage id -> graded relevance

    def labels(self, query_id: str) -> list[int]:
        """Relevance of every passage (in document order) for one query."""
        rel = self.qrels.get(query_id, {})
        return [rel.get(pid, 0) for pid in self.passages]


def _load(name: str) -> dict:
    return json.loads(resources.files("pooling_pipeline.evaluation.data").joinpath(name).read_text("utf-8"))


@lru_cache(maxsize=1)
def probe_data() -> tuple[list[Probe], str]:
    raw = _load("probes.json")
    return [Probe(**p) for p in raw["probes"]], raw["long_seed"]


def probes_for(languages: list[str]) -> list[Probe]:
    """The probes for a model: the common ones, plus non-English ones when it is multilingual or speaks them."""
    probes, _ = probe_data()
    multilingual = len(languages) > 1 or "multi" in languages or "multilingual" in languages
    wanted = set(languages) | ({"multi"} if multilingual else set())
    return [p for p in probes if "*" in p.languages or wanted & set(p.languages)]


@lru_cache(maxsize=1)
def retrieval_set() -> RetrievalSet:
    raw = _load("retrieval.json")
    return RetrievalSet(
        queries={q["id"]: q["text"] for q in raw["queries"]},
        passages={p["id"]: p["text"] for p in raw["passages"]},
        qrels=raw["qrels"],
    )
