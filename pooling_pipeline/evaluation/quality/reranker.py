"""Measuring a reranker: score parity with CrossEncoder.predict, /rerank consistency, ranking quality, the
empty-document gap and over-length behaviour. Measurements only: the judgement is decide.py's."""

from __future__ import annotations

import numpy as np

from pooling_pipeline.evaluation import metrics
from pooling_pipeline.evaluation.clients import CaikitClient, EndpointError, OpenAIPoolingClient
from pooling_pipeline.evaluation.datasets import RetrievalSet, probe_data, retrieval_set
from pooling_pipeline.evaluation.quality.context import Evaluation, ranking_scores
from pooling_pipeline.evaluation.quality.models import OverLength, QualityReport, RerankerParity


def measure_reranker(ev: Evaluation) -> None:
    """Fill `ev.report` with every reranker measurement."""
    data = retrieval_set()
    qids = list(data.queries)
    docs = list(data.passages.values())
    pairs = [(data.queries[q], d) for q in qids for d in docs]
    logits = ev.reference_logits(pairs).reshape(len(qids), len(docs))
    served_scores = np.asarray([ev.served.score(data.queries[q], docs) for q in qids], dtype=np.float64)
    scale, ref_scores = _best_scale(served_scores.ravel(), logits.ravel())
    ref_scores = ref_scores.reshape(logits.shape)
    query = data.queries[qids[0]]
    consistent, note = _rerank_consistency(ev.served, query, docs, served_scores[0])
    parity = RerankerParity(
        pairs=len(pairs),
        scale=scale,
        spearman=metrics.spearman(served_scores.ravel(), ref_scores.ravel()),
        max_abs_diff=metrics.max_abs_diff(served_scores, ref_scores),
        top1_agreement=metrics.top1_agreement(list(served_scores), list(ref_scores)),
        rerank_consistent=consistent,
        rerank_note=note,
    )
    # The newer field names must give the same numbers as text_1/text_2.
    alt = np.asarray(ev.served.score_queries(query, docs), dtype=np.float64)
    if metrics.max_abs_diff(alt, served_scores[0]) > 1e-5:
        parity.rerank_consistent = False
        parity.rerank_note += "; /v1/score with queries/documents differs from text_1/text_2"
    ev.report.ranking["reference"] = ranking_scores(ref_scores, qids)
    ev.report.ranking["served"] = ranking_scores(served_scores, qids)
    if ev.incumbent is not None:
        _compare_incumbent(ev, ev.incumbent, parity, ref_scores)
    ev.report.reranker = parity
    _empty_document_gap(ev, scale)
    _over_length(ev)


def _best_scale(served: np.ndarray, logits: np.ndarray) -> tuple[str, np.ndarray]:
    """The scale the server reports on: sigmoid(logit) (vLLM's default activation) or raw logits."""
    sig = metrics.sigmoid(logits)
    if metrics.max_abs_diff(served, sig) <= metrics.max_abs_diff(served, logits):
        return "sigmoid", sig
    return "logit", logits


def _compare_incumbent(ev: Evaluation, incumbent: CaikitClient, parity: RerankerParity, ref_scores: np.ndarray) -> None:
    data = retrieval_set()
    inc_scores = _caikit_rerank_scores(incumbent, data, ev.report)
    if inc_scores is None:
        return
    parity.incumbent_spearman = metrics.spearman(inc_scores.ravel(), ref_scores.ravel())
    parity.incumbent_max_abs_diff = metrics.max_abs_diff(inc_scores, ref_scores)
    parity.incumbent_top1_agreement = metrics.top1_agreement(list(inc_scores), list(ref_scores))
    ev.report.ranking["incumbent"] = ranking_scores(inc_scores, list(data.queries))
    # Seen with Caikit-NLP 0.5.15: it tokenizes pairs with return_token_type_ids=False, so BERT
    # cross-encoders score with all-zero segment ids; vLLM and CrossEncoder use the real ones.
    ev.report.findings.append(
        f"incumbent vs CrossEncoder.predict: Spearman {parity.incumbent_spearman:.4f}, max |diff| "
        f"{parity.incumbent_max_abs_diff:.2e}, top-1 agreement {parity.incumbent_top1_agreement:.2f} "
        f"(vLLM: {parity.spearman:.4f}, {parity.max_abs_diff:.2e}, {parity.top1_agreement:.2f})"
    )


def _rerank_consistency(
    served: OpenAIPoolingClient, query: str, docs: list[str], scores: np.ndarray
) -> tuple[bool, str]:
    notes = []
    for version in (1, 2):
        try:
            results = served.rerank(query, docs, top_n=len(docs), version=version)
        except EndpointError as exc:
            notes.append(f"/v{version}/rerank failed: {exc}")
            continue
        order = [r.index for r in results]
        by_index = {r.index: r.relevance_score for r in results}
        if sorted(order) != list(range(len(docs))):
            notes.append(f"/v{version}/rerank returned indices {order}")
            continue
        diff = max(abs(by_index[i] - scores[i]) for i in range(len(docs)))
        if diff > 1e-4:
            notes.append(f"/v{version}/rerank scores differ from /v1/score by up to {diff:.4g}")
        if [r.relevance_score for r in results] != sorted(by_index.values(), reverse=True):
            notes.append(f"/v{version}/rerank results are not ordered best first")
    top = served.rerank(query, docs, top_n=3) if not notes else []
    if not notes and len(top) != 3:
        notes.append(f"/v1/rerank with top_n=3 returned {len(top)} results")
    return (not notes), "; ".join(notes) or "rerank v1/v2 agree with /v1/score; top_n honoured"


def _caikit_rerank_scores(incumbent: CaikitClient, data: RetrievalSet, report: QualityReport) -> np.ndarray | None:
    docs = list(data.passages.values())
    rows = []
    for query in data.queries.values():
        try:
            results = incumbent.rerank(query, docs)
        except EndpointError as exc:
            report.findings.append(f"incumbent rerank skipped: {exc}")
            return None
        by_index = {r.index: r.relevance_score for r in results}
        rows.append([by_index.get(i, float("nan")) for i in range(len(docs))])
    return np.asarray(rows, dtype=np.float64)


def _empty_document_gap(ev: Evaluation, scale: str) -> None:
    """Known gap, recorded not hidden: vLLM drops the empty segment, CrossEncoder scores "[CLS] q [SEP] [SEP]"."""
    report = ev.report
    query = "what is the capital of australia"
    try:
        served_empty = ev.served.score(query, [""])[0]
    except EndpointError as exc:
        report.known_gaps.append(f"an empty document is refused by the server: {exc}")
        return
    logit = ev.reference_logits([(query, "")])[0]
    ref = float(metrics.sigmoid([logit])[0]) if scale == "sigmoid" else float(logit)
    diff = abs(served_empty - ref)
    # "Differently" = beyond the float noise seen on ordinary pairs (which is ~1e-7 on CPU float32).
    noise = max(10 * (report.reranker.max_abs_diff if report.reranker else 0.0), 1e-5)
    if diff > noise:
        report.known_gaps.append(
            f"empty document scores differently: served {served_empty:.6f} vs reference {ref:.6f} ({scale}, "
            f"|diff| {diff:.2e}, ordinary pairs ≤ {noise / 10:.1e}); vLLM drops the empty segment while "
            "CrossEncoder scores '[CLS] query [SEP] [SEP]'. Filter empty documents before reranking."
        )
    else:
        report.findings.append(f"empty document scores the same as the reference ({served_empty:.6f} vs {ref:.6f})")


def _over_length(ev: Evaluation) -> None:
    """A query + document pair of max_model_len + 1 tokens: rejected (400) or silently truncated?"""
    report = ev.report
    max_len = report.served_max_model_len
    if not max_len:
        return
    _, seed = probe_data()
    query = "what does the migration compare"
    # [CLS] q [SEP] d [SEP]: the document takes what is left of max_len + 1 after the query and 3 specials.
    q_tokens = ev.count_tokens(query) - 2
    doc = ev.text_with_tokens(seed, max_len + 1 - q_tokens - 1)
    result = OverLength(max_model_len=max_len, tokens=max_len + 1, served_status=200, served_behaviour="accepted")
    try:
        ev.served.score(query, [doc])
    except EndpointError as exc:
        if exc.status is None or exc.status >= 500:
            raise
        result.served_status, result.served_behaviour = exc.status, "rejected"
        result.served_message = exc.server_message
    report.over_length = result
    report.findings.append(
        f"query + document of {max_len + 1} tokens (max_model_len {max_len}): vLLM "
        f"{result.served_behaviour} it (HTTP {result.served_status})"
    )
