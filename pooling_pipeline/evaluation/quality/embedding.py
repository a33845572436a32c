"""Measuring an embedding model: probe parity, dimension, normalisation, retrieval and over-length
behaviour, served (and incumbent) against the sentence-transformers reference. Measurements only: the
judgement is decide.py's."""

from __future__ import annotations

import numpy as np

from pooling_pipeline.evaluation import metrics
from pooling_pipeline.evaluation.clients import CaikitClient, EmbedAttempt, EndpointError, OpenAIPoolingClient
from pooling_pipeline.evaluation.datasets import probe_data, probes_for, retrieval_set
from pooling_pipeline.evaluation.quality.context import Evaluation, ranking_scores
from pooling_pipeline.evaluation.quality.models import OverLength, ProbeRow, QualityReport
from pooling_pipeline.ingest.model_facts import ModelFacts

NORM_TOLERANCE = 1e-3
Vector = list[float] | str  # a vector, or the error the server answered instead


def measure_embedding(ev: Evaluation) -> None:
    """Fill `ev.report` with every embedding measurement."""
    report = ev.report
    limit = _model_limit(ev.facts, report.served_max_model_len)
    probes = _probe_texts(ev, limit)
    texts = [t for _, t in probes]
    ref = ev.reference_embeddings(texts)
    report.dimension_reference = int(ref.shape[1])
    report.normalize_expected = ev.facts.normalize
    served_vecs = _embed_each(ev.served, texts)
    inc_vecs = _caikit_each(ev.incumbent, texts, report) if ev.incumbent else []
    for i, (pid, text) in enumerate(probes):
        row = ProbeRow(
            probe=pid, tokens=ev.count_tokens(text), text_excerpt=_excerpt(text), reference_norm=metrics.l2_norm(ref[i])
        )
        _compare_probe(report, row, ref[i], served_vecs[i], inc_vecs[i] if inc_vecs else None)
        report.probes.append(row)
    _summarise_probes(report, ev.facts)
    _retrieval(ev)
    report.over_length = _over_length(ev)


def _compare_probe(report: QualityReport, row: ProbeRow, ref: np.ndarray, sv: Vector, iv: Vector | None) -> None:
    if isinstance(sv, str):
        row.served_error = sv
    else:
        row.served_norm = metrics.l2_norm(sv)
        row.served_cosine = _safe_cosine(sv, ref) if len(sv) == len(ref) else None
        report.dimension_served = report.dimension_served or len(sv)
    if iv is None:
        return
    if isinstance(iv, str):
        row.incumbent_error = iv
        return
    report.dimension_incumbent = report.dimension_incumbent or len(iv)
    row.incumbent_cosine = _safe_cosine(iv, ref) if len(iv) == len(ref) else None
    if not isinstance(sv, str) and len(sv) == len(iv):
        row.served_vs_incumbent_cosine = _safe_cosine(sv, iv)


def _summarise_probes(report: QualityReport, facts: ModelFacts) -> None:
    cosines = [p.served_cosine for p in report.probes if p.served_cosine is not None]
    if cosines:
        report.min_cosine, report.mean_cosine = float(min(cosines)), float(np.mean(cosines))
    inc_cos = [p.incumbent_cosine for p in report.probes if p.incumbent_cosine is not None]
    if inc_cos:
        report.incumbent_min_cosine, report.incumbent_mean_cosine = float(min(inc_cos)), float(np.mean(inc_cos))
    norms = [p.served_norm for p in report.probes if p.served_norm is not None]
    if norms:
        report.normalised_served = all(abs(n - 1.0) <= NORM_TOLERANCE for n in norms)
        if report.normalised_served and not facts.normalize:
            report.findings.append(
                "the server normalises embeddings although the model has no Normalize module: "
                "cosine is unaffected, dot products differ from the model's"
            )
    report.findings.extend(
        f"incumbent failed probe {p.probe!r}: {p.incumbent_error}" for p in report.probes if p.incumbent_error
    )


def _excerpt(text: str, n: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _safe_cosine(a, b) -> float | None:
    try:
        return metrics.cosine(a, b)
    except ValueError:
        return None


def _probe_texts(ev: Evaluation, limit: int) -> list[tuple[str, str]]:
    """(id, text) pairs: the fixed probes plus one that fills the model's limit exactly."""
    _, seed = probe_data()
    probes = [(p.id, p.text) for p in probes_for(ev.entry.languages)]
    probes.append(("long_at_limit", ev.text_with_tokens(seed, limit)))
    return probes


def _model_limit(facts: ModelFacts, served_max: int | None) -> int:
    """The longest input both the server and the reference take whole."""
    limits = [facts.effective_max_model_len]
    if served_max:
        limits.append(served_max)
    if facts.st_max_seq_length:
        limits.append(facts.st_max_seq_length)
    return min(limits)


def _embed_each(client: OpenAIPoolingClient, texts: list[str]) -> list[Vector]:
    """One batched request; if the batch is refused, each text alone so one bad probe is named, not all."""
    try:
        return list(client.embed(texts))
    except EndpointError:
        out: list[Vector] = []
        for text in texts:
            attempt = client.try_embed(text)
            out.append(_vector_or_error(attempt))
        return out


def _vector_or_error(attempt: EmbedAttempt) -> Vector:
    return attempt.vectors[0] if attempt.vectors is not None else f"HTTP {attempt.status}: {attempt.error}"


def _caikit_each(client: CaikitClient, texts: list[str], report: QualityReport) -> list[Vector]:
    out: list[Vector] = []
    for text in texts:
        try:
            attempt = client.try_embed_one(text)
        except EndpointError as exc:
            report.findings.append(f"incumbent unreachable or broken, comparison skipped: {exc}")
            return []
        out.append(_vector_or_error(attempt))
    return out


def _cosine_matrix(vectors: np.ndarray, n_queries: int) -> np.ndarray:
    """Cosine of every query (the first `n_queries` rows) with every passage (the rest)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit[:n_queries] @ unit[n_queries:].T


def _retrieval(ev: Evaluation) -> None:
    data = retrieval_set()
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids] + list(data.passages.values())
    ref = ev.reference_embeddings(texts)
    ev.report.ranking["reference"] = ranking_scores(_cosine_matrix(ref, len(qids)), qids)
    try:
        sv = np.asarray(ev.served.embed(texts), dtype=np.float64)
        ev.report.ranking["served"] = ranking_scores(_cosine_matrix(sv, len(qids)), qids)
    except EndpointError as exc:
        ev.report.findings.append(f"served retrieval failed: {exc}")
    if ev.incumbent is not None:
        try:
            iv = np.asarray(ev.incumbent.embed(texts), dtype=np.float64)
            ev.report.ranking["incumbent"] = ranking_scores(_cosine_matrix(iv, len(qids)), qids)
        except EndpointError as exc:
            ev.report.findings.append(f"incumbent retrieval skipped: {exc}")


def _over_length(ev: Evaluation) -> OverLength:
    max_len = ev.report.served_max_model_len or ev.facts.effective_max_model_len
    _, seed = probe_data()
    text = ev.text_with_tokens(seed, max_len + 1)
    attempt = ev.served.try_embed(text)
    result = OverLength(
        max_model_len=max_len,
        tokens=max_len + 1,
        served_status=attempt.status,
        served_behaviour="accepted" if attempt.ok else "rejected",
        served_message=attempt.error,
    )
    truncated = ev.served.try_embed(text, truncate_prompt_tokens=max_len)
    result.truncated_status = truncated.status
    if truncated.vectors is not None:
        result.truncated_cosine = _safe_cosine(truncated.vectors[0], ev.reference_embeddings([text])[0])
    if ev.incumbent is not None:
        try:
            inc = ev.incumbent.try_embed_one(text)
            result.incumbent_status, result.incumbent_message = inc.status, inc.error
        except EndpointError as exc:
            result.incumbent_message = str(exc)
    ev.report.findings.append(_over_length_finding(result))
    return result


def _over_length_finding(o: OverLength) -> str:
    truncated = f"; with truncate_prompt_tokens={o.max_model_len}: HTTP {o.truncated_status}"
    if o.truncated_cosine is not None:
        truncated += f", cosine to reference {o.truncated_cosine:.4f}"
    return (
        f"input of {o.tokens} tokens (max_model_len {o.max_model_len}): vLLM {o.served_behaviour} it "
        f"(HTTP {o.served_status}){truncated}" + (f"; Caikit: HTTP {o.incumbent_status}" if o.incumbent_status else "")
    )
